-- Sample customers for the README's walkthrough (SQLite, after sqlite.sql): two venues of ten
-- customers each, dated relative to today, so the example configuration finds candidates
-- (venue 1 anonymises after 3 years, venue 2 deletes after 18 months).
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20)
INSERT INTO customers (id, venue_id, title, first_name, last_name, email, phone, address_line1, city, postcode, country, date_of_birth, marketing_opt_in, created_at)
SELECT i, 1 + (i > 10), 'Ms', 'Sample' || i, 'Customer' || i, 'sample' || i || '@example.org', '07700 900' || printf('%03d', i),
       i || ' Example Street', 'London', 'SW1A 1AA', 'GB', '1980-05-17', i % 2, datetime('now', '-6 years')
FROM n;
-- Customers 1-3 (venue 1) and 11-13 (venue 2) last ordered 4 years ago; the rest this year.
INSERT INTO orders (venue_id, customer_id, placed_at, total_pence, billing_email)
SELECT venue_id, id, CASE WHEN id IN (1, 2, 3, 11, 12, 13) THEN datetime('now', '-4 years') ELSE datetime('now', '-1 month') END, 2500, email
FROM customers;
INSERT INTO order_addresses (order_id, address_type, first_name, last_name, address_1, city, postcode, email, phone)
SELECT o.id, t.kind, c.first_name, c.last_name, c.address_line1, c.city, c.postcode, c.email, c.phone
FROM orders o JOIN customers c ON c.id = o.customer_id
CROSS JOIN (SELECT 'billing' AS kind UNION ALL SELECT 'shipping') t;
INSERT INTO customer_notes (customer_id, body) SELECT id, 'Prefers an aisle seat' FROM customers WHERE id % 3 = 0;
