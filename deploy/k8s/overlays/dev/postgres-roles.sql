-- DEV ONLY, placeholder passwords (see kustomization.yaml). Run once, on an empty data
-- directory, by the postgres image: each service its own role owning its own database,
-- as CloudNativePG's bootstrap.initdb does in production.
CREATE ROLE orders LOGIN PASSWORD 'dev-only-orders';
CREATE DATABASE orders OWNER orders;
CREATE ROLE email LOGIN PASSWORD 'dev-only-email';
CREATE DATABASE email OWNER email;
CREATE ROLE inventory LOGIN PASSWORD 'dev-only-inventory';
CREATE DATABASE inventory OWNER inventory;
CREATE ROLE shipping LOGIN PASSWORD 'dev-only-shipping';
CREATE DATABASE shipping OWNER shipping;
