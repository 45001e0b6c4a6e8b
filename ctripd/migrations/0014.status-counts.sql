-- Payments and sweeps per chain, (kind,) and status, kept by triggers so that `/metrics` never
-- counts whole tables. Triggers only append deltas (no hot counter row to contend on: payment
-- creation stays concurrent); the upkeep job folds them into status_counts, and a reader sums
-- both. Webhook queue figures come from partial indexes instead (events_failed below).
-- depends: 0013.transfer-dust

CREATE TABLE status_counts (
    subject TEXT NOT NULL CHECK (subject IN ('payments', 'sweeps')),
    chain   TEXT NOT NULL,
    kind    TEXT NOT NULL,  -- a sweep's kind; '' for payments
    status  TEXT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (subject, chain, kind, status)
);

CREATE TABLE status_count_deltas (
    subject TEXT NOT NULL,
    chain   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    status  TEXT NOT NULL,
    n       BIGINT NOT NULL
);

-- An update nets its old and new rows: rows whose status did not change add nothing.
CREATE FUNCTION count_payment_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO status_count_deltas
        SELECT 'payments', chain, '', status, count(*) FROM new_rows GROUP BY chain, status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO status_count_deltas
        SELECT 'payments', chain, '', status, -count(*) FROM old_rows GROUP BY chain, status;
    ELSE
        INSERT INTO status_count_deltas
        SELECT 'payments', chain, '', status, sum(n) FROM (
            SELECT chain, status, 1 AS n FROM new_rows
            UNION ALL SELECT chain, status, -1 FROM old_rows
        ) d GROUP BY chain, status HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION count_sweep_statuses() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO status_count_deltas
        SELECT 'sweeps', chain, kind, status, count(*) FROM new_rows GROUP BY chain, kind, status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO status_count_deltas
        SELECT 'sweeps', chain, kind, status, -count(*) FROM old_rows
        GROUP BY chain, kind, status;
    ELSE
        INSERT INTO status_count_deltas
        SELECT 'sweeps', chain, kind, status, sum(n) FROM (
            SELECT chain, kind, status, 1 AS n FROM new_rows
            UNION ALL SELECT chain, kind, status, -1 FROM old_rows
        ) d GROUP BY chain, kind, status HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER payments_counted_insert AFTER INSERT ON payments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_payment_statuses();
CREATE TRIGGER payments_counted_update AFTER UPDATE ON payments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_payment_statuses();
CREATE TRIGGER payments_counted_delete AFTER DELETE ON payments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_payment_statuses();
CREATE TRIGGER sweeps_counted_insert AFTER INSERT ON sweeps
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_sweep_statuses();
CREATE TRIGGER sweeps_counted_update AFTER UPDATE ON sweeps
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_sweep_statuses();
CREATE TRIGGER sweeps_counted_delete AFTER DELETE ON sweeps
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_sweep_statuses();

-- The triggers' locks keep writers out until this commits: the counts start exact.
INSERT INTO status_counts
SELECT 'payments', chain, '', status, count(*) FROM payments GROUP BY chain, status;
INSERT INTO status_counts
SELECT 'sweeps', chain, kind, status, count(*) FROM sweeps GROUP BY chain, kind, status;

CREATE INDEX events_failed ON events (seq) WHERE status = 'failed';
