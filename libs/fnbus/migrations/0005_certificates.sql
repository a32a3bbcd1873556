-- Client certificates for the toolbelt's MTLSClient (owned by the registry).
-- The PEM material is sealed with the registry's SecretBox (FNBUS_SECRETS_KEY);
-- subject, issuer, expiry and fingerprint are kept in clear for listing.

CREATE TABLE certificates (
    account_id   text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name         text NOT NULL,              -- what a lambda passes to MTLSClient
    cert_enc     bytea NOT NULL,             -- sealed PEM: the client certificate (and its chain)
    key_enc      bytea NOT NULL,             -- sealed PEM: the unencrypted private key
    ca_enc       bytea,                      -- sealed PEM: CA to verify the server with, optional
    subject      text NOT NULL,
    issuer       text NOT NULL,
    not_after    timestamptz NOT NULL,
    fingerprint  text NOT NULL,              -- SHA-256 of the certificate's DER, hex with colons
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, name)
);
