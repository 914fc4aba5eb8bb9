-- One login role per service (compose deployment). Each role may create schemas in the
-- database; its service creates and owns its own schema at start-up, and no other role is
-- granted access to it, so a service cannot read or write another service's tables.
CREATE ROLE inventory    LOGIN PASSWORD 'inventory';
CREATE ROLE orders       LOGIN PASSWORD 'orders';
CREATE ROLE payment      LOGIN PASSWORD 'payment';
CREATE ROLE delivery     LOGIN PASSWORD 'delivery';
CREATE ROLE notification LOGIN PASSWORD 'notification';
CREATE ROLE orchestrator LOGIN PASSWORD 'orchestrator';
GRANT CREATE, CONNECT ON DATABASE petstore TO inventory, orders, payment, delivery, notification, orchestrator;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
