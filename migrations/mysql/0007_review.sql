-- Nothing to do on MySQL: 0001_init.sql creates the tables as this migration leaves them.
DO 0;
