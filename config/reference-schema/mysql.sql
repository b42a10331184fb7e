-- The reference customer schema (SPEC 8), MySQL/MariaDB spelling (InnoDB; times DATETIME(6) in
-- UTC): used by the tests and benchmarks. Foreign keys are table constraints: InnoDB ignores a
-- REFERENCES written on a column.
CREATE TABLE customers (
  id BIGINT AUTO_INCREMENT PRIMARY KEY, venue_id BIGINT NOT NULL,
  title VARCHAR(40), first_name VARCHAR(100), last_name VARCHAR(100), email VARCHAR(255), phone VARCHAR(40),
  address_line1 VARCHAR(255), address_line2 VARCHAR(255), city VARCHAR(100), postcode VARCHAR(20), country VARCHAR(100),
  date_of_birth DATE, marketing_opt_in BOOLEAN NOT NULL DEFAULT FALSE,
  legal_hold BOOLEAN NOT NULL DEFAULT FALSE, balance_pence BIGINT NOT NULL DEFAULT 0,
  created_at DATETIME(6) NOT NULL,
  INDEX customers_venue (venue_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE orders (
  id BIGINT AUTO_INCREMENT PRIMARY KEY, venue_id BIGINT NOT NULL,
  customer_id BIGINT NOT NULL,
  placed_at DATETIME(6) NOT NULL, total_pence BIGINT NOT NULL, billing_email VARCHAR(255),
  INDEX orders_customer_placed (customer_id, placed_at),
  FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE order_addresses (
  id BIGINT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL,
  address_type VARCHAR(20) NOT NULL, first_name VARCHAR(100), last_name VARCHAR(100), address_1 VARCHAR(255),
  city VARCHAR(100), postcode VARCHAR(20), email VARCHAR(255), phone VARCHAR(40),
  INDEX order_addresses_order (order_id),
  FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE customer_notes (
  id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT NOT NULL, body TEXT NOT NULL,
  INDEX customer_notes_customer (customer_id),
  FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
-- What else makes a customer active or protected (SPEC 12): tickets for performances, memberships
-- and Gift Aid declarations.
CREATE TABLE tickets (
  id BIGINT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL,
  performance_at DATETIME(6) NOT NULL, seat VARCHAR(20),
  INDEX tickets_order (order_id),
  FOREIGN KEY (order_id) REFERENCES orders(id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE memberships (
  id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT NOT NULL,
  level VARCHAR(40) NOT NULL, expires_at DATE NOT NULL,
  INDEX memberships_customer (customer_id, expires_at),
  FOREIGN KEY (customer_id) REFERENCES customers(id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE gift_aid_declarations (
  id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id BIGINT NOT NULL,
  declared_at DATE NOT NULL,
  INDEX gift_aid_declarations_customer (customer_id, declared_at),
  FOREIGN KEY (customer_id) REFERENCES customers(id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
