//! Versioned schema migrations for the staging database. Pending migrations run in one transaction that also
//! bumps `PRAGMA user_version`, so a crash mid-migration leaves the previous version intact.

use rusqlite::{Connection, TransactionBehavior};

/// Append-only: never edit a migration that has shipped; add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: tenants, resources (desired state), search indexes, group membership, the change journal.
    r#"
    CREATE TABLE tenants (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        token_hash    BLOB,             -- SHA-256 of the bearer token; the token itself is never stored
        created       TEXT NOT NULL,
        token_rotated TEXT
    );
    CREATE UNIQUE INDEX tenants_token ON tenants(token_hash) WHERE token_hash IS NOT NULL;

    CREATE TABLE resources (
        seq           INTEGER PRIMARY KEY,   -- creation order: the stable order of list responses
        tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
        kind          TEXT NOT NULL CHECK (kind IN ('User', 'Group')),
        id            TEXT NOT NULL,
        name_key      TEXT NOT NULL,         -- lower(userName) for users, lower(displayName) for groups
        display_key   TEXT,                  -- lower(displayName) of users, for displayName filters
        external_id   TEXT,
        display       TEXT,                  -- shown as members[].display
        body          TEXT NOT NULL,         -- normalised SCIM document without id, meta and members
        version       INTEGER NOT NULL,
        created       TEXT NOT NULL,
        last_modified TEXT NOT NULL
    );
    CREATE UNIQUE INDEX resources_id ON resources(tenant_id, id);
    CREATE UNIQUE INDEX resources_name ON resources(tenant_id, kind, name_key);
    CREATE INDEX resources_external ON resources(tenant_id, kind, external_id) WHERE external_id IS NOT NULL;
    CREATE INDEX resources_display ON resources(tenant_id, kind, display_key) WHERE display_key IS NOT NULL;

    CREATE TABLE resource_emails (
        resource_seq INTEGER NOT NULL REFERENCES resources(seq) ON DELETE CASCADE,
        tenant_id    INTEGER NOT NULL,
        email        TEXT NOT NULL           -- lower-cased
    );
    CREATE INDEX resource_emails_lookup ON resource_emails(tenant_id, email);
    CREATE INDEX resource_emails_owner ON resource_emails(resource_seq);

    CREATE TABLE group_members (
        group_seq  INTEGER NOT NULL REFERENCES resources(seq) ON DELETE CASCADE,
        member_seq INTEGER NOT NULL REFERENCES resources(seq) ON DELETE CASCADE,
        PRIMARY KEY (group_seq, member_seq)
    ) WITHOUT ROWID;
    CREATE INDEX group_members_member ON group_members(member_seq);

    -- The outbox: one row per acknowledged change, in acknowledgement order. Replay reads it.
    CREATE TABLE journal (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id       INTEGER NOT NULL,
        kind            TEXT NOT NULL,
        resource_id     TEXT NOT NULL,
        op              TEXT NOT NULL CHECK (op IN ('create', 'replace', 'patch', 'delete')),
        request_id      TEXT NOT NULL,
        state           TEXT,                -- the resource after the change (before it, for a delete)
        members_added   TEXT,                -- JSON array of member ids (groups)
        members_removed TEXT,
        version         INTEGER NOT NULL,
        created         TEXT NOT NULL
    );
    CREATE INDEX journal_resource ON journal(tenant_id, resource_id, seq);
    "#,
    // 2: replay state per target: how far it has read the journal, the downstream rows resources are linked
    // to, entries that failed (retrying, dead, or waiting behind one that failed), and the audit trail.
    r#"
    CREATE TABLE replay_cursor (
        target   TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    );
    CREATE TABLE links (
        target         TEXT NOT NULL,
        tenant_id      INTEGER NOT NULL,
        resource_id    TEXT NOT NULL,
        kind           TEXT NOT NULL,
        downstream_key TEXT NOT NULL,
        linked         TEXT NOT NULL,
        PRIMARY KEY (target, tenant_id, resource_id)
    );
    CREATE TABLE replay_failures (
        target       TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        tenant_id    INTEGER NOT NULL,
        resource_id  TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('retry', 'dead', 'waiting')),
        attempts     INTEGER NOT NULL,
        next_attempt INTEGER NOT NULL,    -- unix milliseconds
        last_error   TEXT NOT NULL,
        updated      TEXT NOT NULL,
        PRIMARY KEY (target, seq)
    );
    CREATE INDEX replay_failures_resource ON replay_failures(target, tenant_id, resource_id, seq);
    CREATE TABLE audit (
        id             INTEGER PRIMARY KEY,
        at             TEXT NOT NULL,
        target         TEXT NOT NULL,
        tenant_id      INTEGER NOT NULL,
        seq            INTEGER NOT NULL,
        request_id     TEXT NOT NULL,
        kind           TEXT NOT NULL,
        resource_id    TEXT NOT NULL,
        op             TEXT NOT NULL,
        downstream_key TEXT,
        outcome        TEXT NOT NULL,
        detail         TEXT NOT NULL
    );
    CREATE INDEX audit_resource ON audit(tenant_id, resource_id, id);
    "#,
    // 3: whether a link's downstream entry was created by scim-bridge or found by email (LDAP renames only
    // the entries it created).
    r#"
    ALTER TABLE links ADD COLUMN origin TEXT NOT NULL DEFAULT 'linked' CHECK (origin IN ('created', 'linked'));
    CREATE INDEX links_key ON links(target, downstream_key);
    "#,
    // 4: link owners are looked up by (target, kind, key): a user and a group may have the same numeric key
    // in two different tables of one target.
    r#"
    DROP INDEX links_key;
    CREATE INDEX links_owner ON links(target, kind, downstream_key);
    "#,
    // 5: whether each target is reachable, as replay last found it, so that `status` (another process) can
    // tell an outage from an idle target.
    r#"
    CREATE TABLE target_health (
        target       TEXT PRIMARY KEY,
        reachable    INTEGER NOT NULL,
        since        TEXT NOT NULL,       -- when the present state began
        failures     INTEGER NOT NULL,    -- failed attempts in a row while unreachable
        last_error   TEXT,
        next_attempt INTEGER,             -- unix milliseconds, while unreachable
        checked      TEXT NOT NULL
    );
    "#,
    // 6: pending group members: ids a group names that are not (yet) resources of its tenant.
    r#"
    CREATE TABLE pending_members (
        group_seq INTEGER NOT NULL REFERENCES resources(seq) ON DELETE CASCADE,
        tenant_id INTEGER NOT NULL,
        member_id TEXT NOT NULL,
        since     TEXT NOT NULL,
        PRIMARY KEY (group_seq, member_id)
    ) WITHOUT ROWID;
    CREATE INDEX pending_members_id ON pending_members(tenant_id, member_id);
    "#,
    // 7: every list shape answered from an index (see staging/query.rs): creation order per tenant and kind
    // (the rowid within resources_order), sort orders, covering email lookups; and a counter per tenant and
    // kind, kept by triggers in the same transaction, so that totalResults needs no COUNT.
    r#"
    CREATE INDEX resources_order ON resources(tenant_id, kind);
    DROP INDEX resources_display;
    CREATE INDEX resources_display ON resources(tenant_id, kind, display_key);
    DROP INDEX resources_external;
    CREATE INDEX resources_external ON resources(tenant_id, kind, external_id);
    CREATE INDEX resources_modified ON resources(tenant_id, kind, last_modified);
    DROP INDEX resource_emails_lookup;
    CREATE INDEX resource_emails_lookup ON resource_emails(tenant_id, email, resource_seq);
    CREATE TABLE resource_counts (
        tenant_id INTEGER NOT NULL,
        kind      TEXT NOT NULL,
        count     INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, kind)
    ) WITHOUT ROWID;
    INSERT INTO resource_counts SELECT tenant_id, kind, COUNT(*) FROM resources GROUP BY tenant_id, kind;
    CREATE TRIGGER resources_counted AFTER INSERT ON resources BEGIN
        INSERT INTO resource_counts (tenant_id, kind, count) VALUES (new.tenant_id, new.kind, 1)
        ON CONFLICT (tenant_id, kind) DO UPDATE SET count = count + 1;
    END;
    CREATE TRIGGER resources_uncounted AFTER DELETE ON resources BEGIN
        UPDATE resource_counts SET count = count - 1 WHERE tenant_id = old.tenant_id AND kind = old.kind;
    END;
    "#,
    // 8: one row the writer rewrites when readiness is checked, so that /readyz proves staging takes a
    // durable write now (disk full, read-only file system) rather than that it once did.
    r#"
    CREATE TABLE heartbeat (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at TEXT NOT NULL
    );
    "#,
    // 9: reconciliation: every run (who started it, dry or not, what it counted, how it ended), and one
    // lease per target, so that two runs of one target never overlap, whichever process starts them.
    r#"
    CREATE TABLE reconcile_runs (
        id       INTEGER PRIMARY KEY,
        target   TEXT NOT NULL,
        trigger  TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual')),
        dry_run  INTEGER NOT NULL,
        started  TEXT NOT NULL,
        ended    TEXT,
        status   TEXT NOT NULL CHECK (status IN ('running', 'done', 'stopped', 'failed')),
        counts   TEXT,                      -- JSON object: action -> count
        detail   TEXT
    );
    CREATE INDEX reconcile_runs_target ON reconcile_runs(target, id);
    CREATE TABLE reconcile_leases (
        target        TEXT PRIMARY KEY,
        run_id        INTEGER NOT NULL,
        holder        TEXT NOT NULL,        -- "pid 4711 on host"
        pauses_replay INTEGER NOT NULL,
        expires       INTEGER NOT NULL      -- unix milliseconds; renewed while the run lives
    );
    "#,
    // 10: what each applied change wrote downstream (statements with values, LDAP operations), for
    // `scim-bridge explain`; the audit trail by time, for `history` and retention.
    r#"
    ALTER TABLE audit ADD COLUMN operations TEXT;   -- JSON array of strings
    CREATE INDEX audit_at ON audit(at);
    CREATE INDEX journal_created ON journal(created);
    "#,
];

/// Brings the database to the latest schema version. Safe against another process opening the same new
/// file at the same moment (`token` beside `serve`): the version is read again under an immediate (write)
/// lock, and every pending migration runs in that one transaction, so exactly one opener migrates.
///
/// # Errors
/// A database error, or a database written by a newer scim-bridge (refused rather than misread).
pub fn migrate(conn: &mut Connection) -> Result<(), MigrationError> {
    let latest = MIGRATIONS.len() as i64;
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    if version(conn)? == latest {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = version(&tx)?;
    if current > latest {
        return Err(MigrationError::TooNew { found: current, known: latest });
    }
    for sql in MIGRATIONS.iter().skip(current as usize) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", latest)?;
    tx.commit()?;
    if current < latest {
        tracing::info!(from = current, to = latest, "staging schema migrated");
    }
    Ok(())
}

#[cfg(test)]
fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Db(#[from] rusqlite::Error),
    #[error(
        "the staging database is at schema version {found}, newer than this scim-bridge knows ({known}); upgrade scim-bridge"
    )]
    TooNew { found: i64, known: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes opening a new staging file at once (`token` started beside `serve`) both succeed:
    /// exactly one of them migrates.
    #[test]
    fn concurrent_openers_of_a_new_file() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let mut conn = crate::staging::open_connection(&path)?;
                        Ok::<_, crate::staging::StagingError>(migrate(&mut conn)?)
                    })
                })
                .collect();
            for o in openers {
                o.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn migrates_from_empty_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, latest_version());
        assert_eq!(latest_version(), 10);
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(migrate(&mut conn), Err(MigrationError::TooNew { found: 99, .. })));
    }
}
