//! The schema, as numbered migrations: `MIGRATIONS[i]` takes a database from version i to
//! i + 1; `PRAGMA user_version` says where a file is.

/// Current schema version; `MIGRATIONS[i]` takes a database from version i to i + 1.
pub const SCHEMA_VERSION: i64 = 7;

pub(super) const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE flows (
        id INTEGER PRIMARY KEY,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        src_ip TEXT NOT NULL,
        dst_ip TEXT NOT NULL,
        src_port INTEGER NOT NULL,
        dst_port INTEGER NOT NULL,
        proto INTEGER NOT NULL,
        packets INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        session_id INTEGER,
        record TEXT NOT NULL
    );
    CREATE INDEX flows_last_seen ON flows(last_seen);
    CREATE INDEX flows_src ON flows(src_ip, last_seen);
    CREATE INDEX flows_dst ON flows(dst_ip, last_seen);
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        detector TEXT NOT NULL,
        src_ip TEXT,
        dst_ip TEXT,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        count INTEGER NOT NULL,
        score REAL,
        session_id INTEGER,
        record TEXT NOT NULL
    );
    CREATE INDEX alerts_last_seen ON alerts(last_seen);
    CREATE INDEX alerts_kind ON alerts(kind, last_seen);
    CREATE INDEX alerts_src ON alerts(src_ip, last_seen);
    CREATE INDEX alerts_dst ON alerts(dst_ip, last_seen);
    CREATE TABLE anomalies (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        src_ip TEXT NOT NULL,
        dst_ip TEXT NOT NULL,
        score REAL NOT NULL,
        severity TEXT NOT NULL,
        session_id INTEGER,
        record TEXT NOT NULL
    );
    CREATE INDEX anomalies_ts ON anomalies(ts);
    CREATE TABLE statistics (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        seconds INTEGER NOT NULL,
        packets INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        tcp INTEGER NOT NULL,
        udp INTEGER NOT NULL,
        icmp INTEGER NOT NULL,
        other INTEGER NOT NULL,
        flows INTEGER NOT NULL,
        session_id INTEGER
    );
    CREATE INDEX statistics_ts ON statistics(ts);
    CREATE TABLE capture_sessions (
        id INTEGER PRIMARY KEY,
        started INTEGER NOT NULL,
        ended INTEGER,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        packets INTEGER,
        flows INTEGER
    );
    CREATE TABLE model_versions (
        id INTEGER PRIMARY KEY,
        created INTEGER NOT NULL,
        path TEXT NOT NULL,
        threshold REAL NOT NULL,
        flows INTEGER NOT NULL,
        metadata TEXT NOT NULL
    );",
    // 1 -> 2: live alerts are written when they open and updated as they grow and close; the
    // key (session and run-local alert id) makes that one row.
    "ALTER TABLE alerts ADD COLUMN alert_key TEXT;
    CREATE UNIQUE INDEX alerts_key ON alerts(alert_key);",
    // 2 -> 3: the model's score of every flow (null without a model), to rank flows by it.
    "ALTER TABLE flows ADD COLUMN score REAL;
    CREATE INDEX flows_score ON flows(score);",
    // 3 -> 4: the mitigation audit log: every block, renewal, removal, expiry and refusal.
    "CREATE TABLE mitigations (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        expires INTEGER,
        reason TEXT NOT NULL,
        origin TEXT NOT NULL,
        alert_key TEXT,
        alert_kind TEXT,
        packets INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        session_id INTEGER
    );
    CREATE INDEX mitigations_ts ON mitigations(ts);",
    // 4 -> 5: an attack alert's small flows past its first rows of them, summed per alert,
    // protocol and 10 s instead of a row each (a flood's flows are its packets).
    "CREATE TABLE attack_flows (
        id INTEGER PRIMARY KEY,
        alert_key TEXT,
        ts INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        proto INTEGER NOT NULL,
        flows INTEGER NOT NULL,
        packets INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        session_id INTEGER
    );
    CREATE INDEX attack_flows_alert ON attack_flows(alert_key);
    CREATE INDEX attack_flows_last_seen ON attack_flows(last_seen);",
    // 5 -> 6: alerts are incidents: open while the attack runs (updated as it grows), then
    // closed, or merged into a larger incident (its row id in merged_into); rev orders every
    // write of an alert row, so the event stream pushes updates as well as new alerts.
    "ALTER TABLE alerts ADD COLUMN state TEXT NOT NULL DEFAULT 'closed';
    ALTER TABLE alerts ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE alerts ADD COLUMN merged_into INTEGER;
    UPDATE alerts SET rev = id;
    CREATE INDEX alerts_rev ON alerts(rev);
    CREATE INDEX alerts_state ON alerts(state, last_seen);",
    // 6 -> 7: the rules audit: who changed the rules from the editor or the API, when, what
    // (one line per change, JSON array), the [rules] before and after, the file written.
    // Never deleted by retention: rare, and the answer to "why did this stop alerting".
    "CREATE TABLE rule_changes (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        actor TEXT NOT NULL,
        remote TEXT,
        changes TEXT NOT NULL,
        before TEXT NOT NULL,
        after TEXT NOT NULL,
        file TEXT,
        session_id INTEGER
    );",
];
