-- The reference customer schema (SPEC 8), SQLite spelling: used by the demo, tests and benchmarks.
CREATE TABLE customers (
  id INTEGER PRIMARY KEY, venue_id INTEGER NOT NULL,
  title TEXT, first_name TEXT, last_name TEXT, email TEXT, phone TEXT,
  address_line1 TEXT, address_line2 TEXT, city TEXT, postcode TEXT, country TEXT,
  date_of_birth TEXT, marketing_opt_in INTEGER NOT NULL DEFAULT 0,
  legal_hold INTEGER NOT NULL DEFAULT 0, balance_pence INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL);
-- A database of many venues is read one venue at a time (SPEC 11).
CREATE INDEX customers_venue ON customers(venue_id);
CREATE TABLE orders (
  id INTEGER PRIMARY KEY, venue_id INTEGER NOT NULL,
  customer_id INTEGER NOT NULL REFERENCES customers(id),
  placed_at TEXT NOT NULL, total_pence INTEGER NOT NULL, billing_email TEXT);
CREATE INDEX orders_customer_placed ON orders(customer_id, placed_at);
CREATE TABLE order_addresses (
  id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id),
  address_type TEXT NOT NULL, first_name TEXT, last_name TEXT, address_1 TEXT,
  city TEXT, postcode TEXT, email TEXT, phone TEXT);
CREATE INDEX order_addresses_order ON order_addresses(order_id);
CREATE TABLE customer_notes (
  id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), body TEXT NOT NULL);
CREATE INDEX customer_notes_customer ON customer_notes(customer_id);
-- What else makes a customer active or protected (SPEC 12): tickets for performances, memberships
-- and Gift Aid declarations.
CREATE TABLE tickets (
  id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id),
  performance_at TEXT NOT NULL, seat TEXT);
CREATE INDEX tickets_order ON tickets(order_id);
CREATE TABLE memberships (
  id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
  level TEXT NOT NULL, expires_at TEXT NOT NULL);
CREATE INDEX memberships_customer ON memberships(customer_id, expires_at);
CREATE TABLE gift_aid_declarations (
  id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
  declared_at TEXT NOT NULL);
CREATE INDEX gift_aid_declarations_customer ON gift_aid_declarations(customer_id, declared_at);
