//! Read side of the store: the queries the API answers with. Every value from a client is a
//! bound parameter; only column and table names chosen here are formatted into SQL.

use rusqlite::{Connection, OptionalExtension as _, ToSql, params, params_from_iter};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    detect::ml::{
        features::{FlowNumbers, N_FEATURES, SourceContext, number_features},
        model::RowMeta,
    },
    record::rfc3339_us,
};

/// Validated list parameters (times in ns since the epoch).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    pub ip: Option<String>,
    pub limit: i64,
    pub cursor: Option<i64>,
    /// Highest score first (only scored rows) instead of newest first.
    pub by_score: bool,
    /// With `by_score`: the score of the cursor's row (rows after it have a lower score, or
    /// the same score and a lower id).
    pub cursor_score: Option<f64>,
    /// Rows scoring at least this.
    pub min_score: Option<f64>,
    /// Alerts in this state only (`open`, `closed`, `merged`).
    pub state: Option<String>,
    /// Alerts whose remote side is in this country / AS (read from the stored record).
    pub country: Option<String>,
    pub asn: Option<u32>,
}

/// The tables a list can read, with their time column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Alerts,
    Anomalies,
    Flows,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Alerts => "alerts",
            Self::Anomalies => "anomalies",
            Self::Flows => "flows",
        }
    }
    fn time_col(self) -> &'static str {
        match self {
            Self::Anomalies => "ts",
            Self::Alerts | Self::Flows => "last_seen",
        }
    }
}

/// A list row: id, record, score, attack flows summed (JSON), merged into (alerts).
type ListRow = (i64, String, Option<f64>, Option<String>, Option<i64>);

/// Rows of `table` matching `f`, newest first, with a cursor to the next page.
pub fn list(c: &Connection, table: Table, f: &Filter) -> rusqlite::Result<Value> {
    let (table, time_col, with_kind) = (table.name(), table.time_col(), table == Table::Alerts);
    let mut sql = format!("SELECT id, record FROM {table} WHERE 1=1");
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(v) = f.since {
        sql.push_str(&format!(" AND {time_col} >= ?"));
        args.push(Box::new(v));
    }
    if let Some(v) = f.until {
        sql.push_str(&format!(" AND {time_col} <= ?"));
        args.push(Box::new(v));
    }
    if with_kind && let Some(k) = &f.kind {
        sql.push_str(" AND kind = ?");
        args.push(Box::new(k.clone()));
    }
    if with_kind && let Some(st) = &f.state {
        sql.push_str(" AND state = ?");
        args.push(Box::new(st.clone()));
    }
    if with_kind && let Some(c) = &f.country {
        sql.push_str(" AND json_extract(record, '$.remote.country') = ?");
        args.push(Box::new(c.clone()));
    }
    if with_kind && let Some(a) = f.asn {
        sql.push_str(" AND json_extract(record, '$.remote.asn') = ?");
        args.push(Box::new(i64::from(a)));
    }
    if let Some(s) = &f.severity {
        sql.push_str(" AND severity = ?");
        args.push(Box::new(s.clone()));
    }
    if let Some(ip) = &f.ip {
        sql.push_str(" AND (src_ip = ? OR dst_ip = ?)");
        args.push(Box::new(ip.clone()));
        args.push(Box::new(ip.clone()));
    }
    if let Some(m) = f.min_score {
        sql.push_str(" AND score >= ?");
        args.push(Box::new(m));
    }
    if f.by_score {
        sql.push_str(" AND score IS NOT NULL");
        if let (Some(cur), Some(sc)) = (f.cursor, f.cursor_score) {
            sql.push_str(" AND (score < ? OR (score = ? AND id < ?))");
            args.push(Box::new(sc));
            args.push(Box::new(sc));
            args.push(Box::new(cur));
        }
        sql.push_str(" ORDER BY score DESC, id DESC LIMIT ?");
    } else {
        if let Some(cur) = f.cursor {
            sql.push_str(" AND id < ?");
            args.push(Box::new(cur));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
    }
    args.push(Box::new(f.limit + 1));
    // An attack alert's small flows past its first rows of them are summed in attack_flows.
    let summed = if with_kind { ATTACK_FLOWS_SUM } else { "NULL" };
    let merged = if with_kind { "merged_into" } else { "NULL" };
    let sql = sql.replacen(
        "SELECT id, record",
        &format!("SELECT id, record, score, {summed}, {merged}"),
        1,
    );
    let mut stmt = c.prepare(&sql)?;
    let mut rows: Vec<ListRow> = stmt
        .query_map(params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let more = rows.len() as i64 > f.limit;
    rows.truncate(f.limit as usize);
    // Newest first pages by id; score order by (score, id), written "score_id".
    let next: Option<Value> =
        more.then(|| rows.last())
            .flatten()
            .map(|(id, _, score, _, _)| match (f.by_score, score) {
                (true, Some(s)) => json!(format!("{s}_{id}")),
                _ => json!(id),
            });
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, rec, _, summed, merged)| {
            let mut v = with_id(&rec, id, merged);
            if let (Value::Object(m), Some(s)) = (&mut v, summed) {
                m.insert(
                    "flows_summed".into(),
                    serde_json::from_str(&s).unwrap_or(Value::Null),
                );
            }
            v
        })
        .collect();
    Ok(json!({ "items": items, "next_cursor": next }))
}

/// The attack flows summed into an alert (flows, packets, bytes), as JSON; NULL when none were.
const ATTACK_FLOWS_SUM: &str = "(SELECT json_object('flows', sum(flows), 'packets', sum(packets), 'bytes', sum(bytes)) \
     FROM attack_flows f WHERE f.alert_key = alerts.alert_key HAVING count(*) > 0)";

fn range(f: &Filter, col: &str) -> (String, Vec<i64>) {
    let mut sql = String::new();
    let mut args = Vec::new();
    if let Some(v) = f.since {
        sql.push_str(&format!(" AND {col} >= ?"));
        args.push(v);
    }
    if let Some(v) = f.until {
        sql.push_str(&format!(" AND {col} <= ?"));
        args.push(v);
    }
    (sql, args)
}

/// How far back top talkers look when no `since` is given: from the newest flow stored (so a
/// replayed capture of years ago is covered as much as live traffic).
pub const TALKERS_WINDOW_NS: i64 = 3_600_000_000_000;
/// Flows top talkers add up at most: the newest of the range.
pub const TALKERS_FLOWS: u64 = 200_000;

/// Sources by bytes sent. Without `since`, over the hour up to the newest flow: the whole
/// table (millions of rows after a flood) would take seconds per dashboard refresh.
pub fn top_talkers(c: &Connection, f: &Filter) -> rusqlite::Result<Value> {
    let mut f = f.clone();
    if f.since.is_none() {
        let newest: Option<i64> =
            c.query_row("SELECT max(last_seen) FROM flows", [], |r| r.get(0))?;
        f.since = newest
            .map(|n| f.until.map_or(n, |u| u.min(n)))
            .map(|end| end.saturating_sub(TALKERS_WINDOW_NS));
    }
    let (cond, args) = range(&f, "last_seen");
    // The newest TALKERS_FLOWS flows of the range at most: a flood hour holds millions.
    let sql = format!(
        "SELECT src_ip, sum(bytes), sum(packets), count(*) FROM
           (SELECT src_ip, bytes, packets FROM flows NOT INDEXED WHERE 1=1{cond}
            ORDER BY id DESC LIMIT {TALKERS_FLOWS})
         GROUP BY src_ip ORDER BY sum(bytes) DESC LIMIT ?"
    );
    let mut stmt = c.prepare(&sql)?;
    let mut p: Vec<i64> = args;
    p.push(f.limit);
    let items: Vec<Value> = stmt
        .query_map(params_from_iter(p), |r| {
            Ok(json!({"ip": r.get::<_, String>(0)?, "bytes": r.get::<_, i64>(1)?, "packets": r.get::<_, i64>(2)?, "flows": r.get::<_, i64>(3)?}))
        })?
        .collect::<Result<_, _>>()?;
    Ok(json!({ "items": items }))
}

/// Sources of attack alerts, worst first.
pub fn suspicious_ips(c: &Connection, f: &Filter) -> rusqlite::Result<Value> {
    let (cond, args) = range(f, "last_seen");
    // Sources of attack alerts, worst first.
    let sql = format!(
        "SELECT src_ip, count(*), group_concat(DISTINCT kind),
                max(CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END),
                max(last_seen)
         FROM alerts WHERE src_ip IS NOT NULL AND kind != 'traffic_spike'{cond}
         GROUP BY src_ip ORDER BY 4 DESC, 2 DESC LIMIT ?"
    );
    let mut p: Vec<i64> = args;
    p.push(f.limit);
    let mut stmt = c.prepare(&sql)?;
    let names = ["normal", "low", "medium", "high", "critical"];
    let items: Vec<Value> = stmt
        .query_map(params_from_iter(p), |r| {
            let sev: i64 = r.get(3)?;
            Ok(json!({
                "ip": r.get::<_, String>(0)?,
                "alerts": r.get::<_, i64>(1)?,
                "kinds": r.get::<_, String>(2)?.split(',').collect::<Vec<_>>(),
                "max_severity": names[sev.clamp(0, 4) as usize],
                "last_seen": rfc3339_us(r.get::<_, i64>(4)?.max(0) as u64),
            }))
        })?
        .collect::<Result<_, _>>()?;
    Ok(json!({ "items": items }))
}

/// Where attacks came from: alerts (not merged ones) in the range by their remote side's
/// country and AS, as `[geo]` recorded them.
pub fn origins(c: &Connection, f: &Filter) -> rusqlite::Result<Value> {
    let (cond, args) = range(f, "last_seen");
    let group = |key: &str, extra: &str| -> rusqlite::Result<Vec<Value>> {
        let sql = format!(
            "SELECT json_extract(record, '$.remote.{key}') k, count(*),
                    count(DISTINCT json_extract(record, '$.remote.ip')){extra}
             FROM alerts WHERE state != 'merged' AND k IS NOT NULL{cond}
             GROUP BY k ORDER BY 2 DESC, 3 DESC LIMIT ?"
        );
        let mut p = args.clone();
        p.push(f.limit);
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(p), |r| {
            let k: rusqlite::types::Value = r.get(0)?;
            Ok(json!({
                "key": match k {
                    rusqlite::types::Value::Integer(n) => json!(n.to_string()),
                    rusqlite::types::Value::Text(t) => json!(t),
                    _ => Value::Null,
                },
                "alerts": r.get::<_, i64>(1)?,
                "sources": r.get::<_, i64>(2)?,
                "name": if extra.is_empty() { None } else { r.get::<_, Option<String>>(3)? },
            }))
        })?;
        rows.collect()
    };
    let countries = group("country", "")?;
    let asns = group("asn", ", max(json_extract(record, '$.remote.as_org'))")?;
    let unknown: i64 = c.query_row(
        &format!(
            "SELECT count(*) FROM alerts WHERE state != 'merged'
             AND json_extract(record, '$.remote') IS NULL{cond}"
        ),
        params_from_iter(args),
        |r| r.get(0),
    )?;
    Ok(json!({ "countries": countries, "asns": asns, "unknown": unknown }))
}

/// Totals, per-protocol counts, alert counts by kind, and a time series for charts.
pub fn stats(c: &Connection, f: &Filter) -> rusqlite::Result<Value> {
    let (cond, args) = range(f, "ts");
    let (packets, bytes, tcp, udp, icmp, other): (i64, i64, i64, i64, i64, i64) = c.query_row(
        &format!("SELECT coalesce(sum(packets),0), coalesce(sum(bytes),0), coalesce(sum(tcp),0), coalesce(sum(udp),0), coalesce(sum(icmp),0), coalesce(sum(other),0) FROM statistics WHERE 1=1{cond}"),
        params_from_iter(args.clone()),
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
    )?;
    let (fcond, fargs) = range(f, "last_seen");
    let stored: i64 = c.query_row(
        &format!("SELECT count(*) FROM flows WHERE 1=1{fcond}"),
        params_from_iter(fargs.clone()),
        |r| r.get(0),
    )?;
    // Every flow seen: the stored rows and the attacks' small flows summed into their alerts.
    let summed: i64 = c.query_row(
        &format!("SELECT coalesce(sum(flows), 0) FROM attack_flows WHERE 1=1{fcond}"),
        params_from_iter(fargs.clone()),
        |r| r.get(0),
    )?;
    let flows = stored + summed;
    let anomalies: i64 = c.query_row(
        &format!(
            "SELECT count(*) FROM anomalies WHERE 1=1{}",
            range(f, "ts").0
        ),
        params_from_iter(args.clone()),
        |r| r.get(0),
    )?;
    let mut by_kind = serde_json::Map::new();
    let mut stmt = c.prepare(&format!(
        "SELECT kind, count(*) FROM alerts WHERE 1=1{fcond} GROUP BY kind"
    ))?;
    for row in stmt.query_map(params_from_iter(fargs.clone()), |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (k, n) = row?;
        by_kind.insert(k, json!(n));
    }
    let alerts: i64 = by_kind.values().filter_map(Value::as_i64).sum();
    // Time series: at most `limit` points, bucketed evenly over the range present.
    let (lo, hi): (Option<i64>, Option<i64>) = c.query_row(
        &format!("SELECT min(ts), max(ts) FROM statistics WHERE 1=1{cond}"),
        params_from_iter(args.clone()),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut series = Vec::new();
    if let (Some(lo), Some(hi)) = (lo, hi) {
        let points = f.limit.clamp(1, 1000);
        let step = ((hi - lo) / points + 1).max(1_000_000_000);
        let mut p: Vec<i64> = vec![lo, step];
        p.extend(args.iter().copied());
        let mut stmt = c.prepare(&format!(
            "SELECT (ts - ?1) / ?2 AS b, min(ts), sum(packets), sum(bytes), sum(seconds) FROM statistics WHERE 1=1{} GROUP BY b ORDER BY b",
            cond
        ))?;
        // SQLite numbers the bare `?` of `cond` after ?1 and ?2, so its values follow them.
        let rows = stmt.query_map(params_from_iter(p), |r| {
            let secs = r.get::<_, i64>(4)?.max(1) as f64;
            Ok(json!({
                "ts": rfc3339_us(r.get::<_, i64>(1)?.max(0) as u64),
                "packets": r.get::<_, i64>(2)?,
                "bytes": r.get::<_, i64>(3)?,
                "pps": r.get::<_, i64>(2)? as f64 / secs,
            }))
        })?;
        for row in rows {
            series.push(row?);
        }
    }
    Ok(json!({
        "totals": { "packets": packets, "bytes": bytes, "flows": flows, "flows_summed": summed, "alerts": alerts, "anomalies": anomalies },
        "protocols": { "tcp": tcp, "udp": udp, "icmp": icmp, "other": other },
        "alerts_by_kind": by_kind,
        "series": series,
        "alert_series": alert_series(c, f)?,
    }))
}

/// Alerts per kind over time (by last_seen), in at most `limit` buckets over their range.
fn alert_series(c: &Connection, f: &Filter) -> rusqlite::Result<Vec<Value>> {
    let (cond, args) = range(f, "last_seen");
    let (lo, hi): (Option<i64>, Option<i64>) = c.query_row(
        &format!("SELECT min(last_seen), max(last_seen) FROM alerts WHERE 1=1{cond}"),
        params_from_iter(args.clone()),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Vec::new());
    };
    let step = ((hi - lo) / f.limit.clamp(1, 1000) + 1).max(1_000_000_000);
    let mut p: Vec<i64> = vec![lo, step];
    p.extend(args);
    // SQLite numbers the bare `?` of `cond` after ?1 and ?2.
    let mut stmt = c.prepare(&format!(
        "SELECT (last_seen - ?1) / ?2 AS b, kind, count(*) FROM alerts WHERE 1=1{cond} GROUP BY b, kind ORDER BY b, kind"
    ))?;
    let rows = stmt.query_map(params_from_iter(p), |r| {
        let b: i64 = r.get(0)?;
        Ok(json!({
            "ts": rfc3339_us((lo + b * step).max(0) as u64),
            "kind": r.get::<_, String>(1)?,
            "count": r.get::<_, i64>(2)?,
        }))
    })?;
    rows.collect()
}

/// The newest model version recorded.
pub fn latest_model(c: &Connection) -> rusqlite::Result<Option<Value>> {
    let r = c.query_row(
        "SELECT path, threshold, flows, created FROM model_versions ORDER BY id DESC LIMIT 1",
        [],
        |r| {
            Ok(json!({"path": r.get::<_, String>(0)?, "threshold": r.get::<_, f64>(1)?, "flows": r.get::<_, i64>(2)?,
                      "trained": rfc3339_us(r.get::<_, i64>(3)?.max(0) as u64)}))
        },
    );
    match r {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Highest alert id (0 when there is none).
/// The newest write of any alert row (see `alerts.rev`): where an event stream starts.
pub fn max_alert_rev(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT coalesce(max(rev), 0) FROM alerts", [], |r| r.get(0))
}

/// Alerts written (opened, updated, closed, merged) after write `after`, oldest write first:
/// (rev, record with the row id).
pub fn alerts_after(c: &Connection, after: i64, limit: i64) -> rusqlite::Result<Vec<(i64, Value)>> {
    let mut s = c.prepare(
        "SELECT rev, id, record, merged_into FROM alerts WHERE rev > ?1 ORDER BY rev LIMIT ?2",
    )?;
    let rows: Vec<(i64, i64, String, Option<i64>)> = s
        .query_map([after, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(rev, id, rec, merged)| (rev, with_id(&rec, id, merged)))
        .collect())
}

/// A stored record as the API shows it: run-local ids replaced by row ids.
fn with_id(rec: &str, id: i64, merged_into: Option<i64>) -> Value {
    let mut v: Value = serde_json::from_str(rec).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), json!(id));
        if let Some(into) = merged_into {
            m.insert("merged_into".into(), json!(into));
        }
    }
    v
}

/// One alert by row id, as the list shows it (the detail view's header).
pub fn alert(c: &Connection, id: i64) -> rusqlite::Result<Option<Value>> {
    let row: Option<(String, Option<i64>, Option<String>)> = c
        .query_row(
            &format!("SELECT record, merged_into, {ATTACK_FLOWS_SUM} FROM alerts WHERE id = ?1"),
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(row.map(|(rec, merged, summed)| {
        let mut v = with_id(&rec, id, merged);
        if let (Value::Object(m), Some(s)) = (&mut v, summed) {
            m.insert(
                "flows_summed".into(),
                serde_json::from_str(&s).unwrap_or(Value::Null),
            );
        }
        v
    }))
}

/// Rows of each part of an alert's detail at most (its flows, its anomalies).
pub const DETAIL_ROWS: i64 = 200;
/// Width of a bucket of an incident's packet timeline.
const TIMELINE_BUCKET_NS: i64 = 10_000_000_000;

/// An alert as an operator investigates it: its record, its packets over time (its flows'
/// and its summed flows' packets per 10 s), its flows, the model anomalies about its
/// endpoints while it ran (top features in each), and what mitigation did about it.
/// `None` when there is no such alert.
pub fn alert_detail(c: &Connection, id: i64) -> rusqlite::Result<Option<Value>> {
    let Some(alert) = self::alert(c, id)? else {
        return Ok(None);
    };
    let (first, last, src, dst, key): (i64, i64, Option<String>, Option<String>, Option<String>) =
        c.query_row(
            "SELECT first_seen, last_seen, src_ip, dst_ip, alert_key FROM alerts WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
    // The alert's traffic: from its source (or into its victim when it names no source), from
    // the window its rule measured before it opened to a little after its last firing.
    let from = first.saturating_sub(60_000_000_000);
    let to = last.saturating_add(TIMELINE_BUCKET_NS);
    let (col, ip) = match (&src, &dst) {
        (Some(s), _) => ("src_ip", s.clone()),
        (None, Some(d)) => ("dst_ip", d.clone()),
        (None, None) => ("src_ip", String::new()),
    };
    // A pair's alert (a scan) shows the pair's flows; a source's or a victim's, all of theirs.
    let pair = src.as_ref().and(dst.clone()).unwrap_or_default();
    let flows: Vec<Value> = {
        let mut s = c.prepare(&format!(
            "SELECT id, record FROM flows WHERE {col} = ?1 AND last_seen >= ?2 AND last_seen <= ?3
               AND (?4 = '' OR dst_ip = ?4)
             ORDER BY last_seen LIMIT {DETAIL_ROWS}"
        ))?;
        s.query_map(params![ip, from, to, pair], |r| {
            Ok(with_id(&r.get::<_, String>(1)?, r.get(0)?, None))
        })?
        .collect::<Result<_, _>>()?
    };
    let mut timeline: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    {
        let sql = format!(
            "SELECT last_seen / {TIMELINE_BUCKET_NS}, sum(packets) FROM flows
             WHERE {col} = ?1 AND last_seen >= ?2 AND last_seen <= ?3 GROUP BY 1"
        );
        let mut s = c.prepare(&sql)?;
        for r in s.query_map(params![ip, from, to], |r| Ok((r.get(0)?, r.get(1)?)))? {
            let (b, n): (i64, i64) = r?;
            *timeline.entry(b).or_default() += n;
        }
        let mut s = c.prepare(&format!(
            "SELECT ts / {TIMELINE_BUCKET_NS}, sum(packets) FROM attack_flows WHERE alert_key = ?1 GROUP BY 1"
        ))?;
        for r in s.query_map([key.clone()], |r| Ok((r.get(0)?, r.get(1)?)))? {
            let (b, n): (i64, i64) = r?;
            *timeline.entry(b).or_default() += n;
        }
    }
    let anomalies: Vec<Value> = {
        let mut s = c.prepare(&format!(
            "SELECT id, record FROM anomalies WHERE ts >= ?1 AND ts <= ?2
               AND (src_ip = ?3 OR dst_ip = ?3 OR src_ip = ?4 OR dst_ip = ?4)
             ORDER BY score DESC LIMIT {DETAIL_ROWS}"
        ))?;
        s.query_map(params![from, to, src, dst], |r| {
            Ok(with_id(&r.get::<_, String>(1)?, r.get(0)?, None))
        })?
        .collect::<Result<_, _>>()?
    };
    let mitigations: Vec<Value> = {
        let mut s = c.prepare(
            "SELECT ts, action, target, expires, reason, packets, bytes FROM mitigations
             WHERE alert_key = ?1 ORDER BY id",
        )?;
        s.query_map([key], |r| {
            Ok(json!({
                "ts": r.get::<_, i64>(0)?,
                "action": r.get::<_, String>(1)?,
                "target": r.get::<_, String>(2)?,
                "expires": r.get::<_, Option<i64>>(3)?,
                "reason": r.get::<_, String>(4)?,
                "dropped_packets": r.get::<_, i64>(5)?,
                "dropped_bytes": r.get::<_, i64>(6)?,
            }))
        })?
        .collect::<Result<_, _>>()?
    };
    let merged: Vec<Value> = {
        let mut s = c.prepare(
            "SELECT id, record, merged_into FROM alerts WHERE merged_into = ?1 ORDER BY id",
        )?;
        s.query_map([id], |r| {
            Ok(with_id(&r.get::<_, String>(1)?, r.get(0)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?
    };
    let timeline: Vec<Value> = timeline
        .into_iter()
        .map(|(b, n)| json!({ "ts": b * TIMELINE_BUCKET_NS, "packets": n }))
        .collect();
    Ok(Some(json!({
        "alert": alert,
        "timeline": { "bucket_s": TIMELINE_BUCKET_NS / 1_000_000_000, "points": timeline },
        "flows": flows,
        "anomalies": anomalies,
        "mitigations": mitigations,
        "merged": merged,
    })))
}

/// Stored totals for `/metrics`.
pub struct MetricTotals {
    pub packets: i64,
    pub bytes: i64,
    pub flows: i64,
    /// Alerts by kind.
    pub alerts: Vec<(String, i64)>,
}

pub fn metric_totals(c: &Connection) -> rusqlite::Result<MetricTotals> {
    let (packets, bytes): (i64, i64) = c.query_row(
        "SELECT coalesce(sum(packets),0), coalesce(sum(bytes),0) FROM statistics",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    // The stored rows and the attacks' small flows summed into their alerts.
    let flows: i64 = c.query_row(
        "SELECT (SELECT count(*) FROM flows) + (SELECT coalesce(sum(flows), 0) FROM attack_flows)",
        [],
        |r| r.get(0),
    )?;
    let mut stmt = c.prepare("SELECT kind, count(*) FROM alerts GROUP BY kind")?;
    let kinds: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(MetricTotals {
        packets,
        bytes,
        flows,
        alerts: kinds,
    })
}

/// Feature rows of the stored flows that ended in `[since, until]`, oldest first, with the
/// source fan-out rebuilt from the same flows as it would have been live.
pub fn training_rows(
    c: &Connection,
    since: i64,
    until: i64,
    window_s: u64,
    cap: usize,
) -> rusqlite::Result<(Vec<[f64; N_FEATURES]>, Vec<RowMeta>)> {
    #[derive(Deserialize)]
    struct Stored {
        src_ip: std::net::IpAddr,
        dst_ip: std::net::IpAddr,
        dst_port: u16,
        #[serde(flatten)]
        numbers: FlowNumbers,
    }
    let mut stmt = c.prepare(
        "SELECT first_seen, last_seen, record FROM flows WHERE last_seen >= ?1 AND last_seen <= ?2 ORDER BY first_seen LIMIT 2000000",
    )?;
    let rows: Vec<(i64, i64, String)> = stmt
        .query_map([since, until], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut ctx = SourceContext::new(window_s * 1_000_000_000, cap);
    let mut out = Vec::with_capacity(rows.len());
    let mut meta = Vec::with_capacity(rows.len());
    for (first, last, rec) in rows {
        let Ok(f) = serde_json::from_str::<Stored>(&rec) else {
            continue;
        };
        ctx.on_event(&crate::flow::FlowEvent {
            ts_ns: first.max(0) as u64,
            src: f.src_ip,
            dst: f.dst_ip,
            src_port: 0,
            dst_port: f.dst_port,
            proto: 0,
            family: 0,
            key_dst_port: f.dst_port,
            new_flow: true,
            from_src: true,
            packets: 1,
            bytes: 0,
            syn: 0,
            syn_ack: 0,
            rst: 0,
            completed: false,
        });
        out.push(number_features(
            &f.numbers,
            ctx.fan_out(f.src_ip, last.max(0) as u64),
        ));
        meta.push(RowMeta {
            src: f.src_ip,
            ts_ns: last.max(0) as u64,
        });
    }
    Ok((out, meta))
}

/// The newest `limit` mitigation audit rows, newest first, with the database id of the alert
/// that caused each (when it did). A database from before the table existed has none.
pub fn mitigations(c: &Connection, limit: i64) -> rusqlite::Result<Vec<Value>> {
    let exists: i64 = c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'mitigations'",
        [],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut s = c.prepare(
        "SELECT m.id, m.ts, m.action, m.target, m.expires, m.reason, m.origin, m.alert_kind,
                m.packets, m.bytes, a.id
         FROM mitigations m LEFT JOIN alerts a ON a.alert_key = m.alert_key
         ORDER BY m.id DESC LIMIT ?1",
    )?;
    let rows = s.query_map([limit], |r| {
        let ts: i64 = r.get(1)?;
        let expires: Option<i64> = r.get(4)?;
        Ok(json!({
            "id": r.get::<_, i64>(0)?,
            "ts": rfc3339_us(ts.max(0) as u64),
            "ts_ns": ts,
            "action": r.get::<_, String>(2)?,
            "target": r.get::<_, String>(3)?,
            "expires": expires.map(|e| rfc3339_us(e.max(0) as u64)),
            "reason": r.get::<_, String>(5)?,
            "origin": r.get::<_, String>(6)?,
            "alert_kind": r.get::<_, Option<String>>(7)?,
            "dropped_packets": r.get::<_, i64>(8)?,
            "dropped_bytes": r.get::<_, i64>(9)?,
            "alert_id": r.get::<_, Option<i64>>(10)?,
        }))
    })?;
    rows.collect()
}

/// Alerts (incidents: merged ones left out) that were open at some time in `[from_ns, to_ns]`,
/// oldest first, `limit` at most, and how many there are.
pub fn alerts_between(
    c: &Connection,
    from_ns: u64,
    to_ns: u64,
    limit: i64,
) -> rusqlite::Result<(Vec<Value>, i64)> {
    let (from, to) = (
        from_ns.min(i64::MAX as u64) as i64,
        to_ns.min(i64::MAX as u64) as i64,
    );
    let total: i64 = c.query_row(
        "SELECT count(*) FROM alerts WHERE last_seen >= ?1 AND first_seen <= ?2 AND state != 'merged'",
        [from, to],
        |r| r.get(0),
    )?;
    let mut s = c.prepare(
        "SELECT id, record FROM alerts WHERE last_seen >= ?1 AND first_seen <= ?2
         AND state != 'merged' ORDER BY first_seen LIMIT ?3",
    )?;
    let rows = s.query_map(rusqlite::params![from, to, limit], |r| {
        let id: i64 = r.get(0)?;
        let rec: String = r.get(1)?;
        let mut v = serde_json::from_str::<Value>(&rec).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), json!(id));
        }
        Ok(v)
    })?;
    Ok((rows.collect::<rusqlite::Result<_>>()?, total))
}

/// The newest `limit` changes of the rules, newest first. A database from before the table
/// existed has none.
pub fn rule_changes(c: &Connection, limit: i64) -> rusqlite::Result<Vec<Value>> {
    let exists: i64 = c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'rule_changes'",
        [],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut s = c.prepare(
        "SELECT id, ts, actor, remote, changes, before, after, file FROM rule_changes
         ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = s.query_map([limit], |r| {
        let ts: i64 = r.get(1)?;
        let changes: String = r.get(4)?;
        Ok(json!({
            "id": r.get::<_, i64>(0)?,
            "ts": rfc3339_us(ts.max(0) as u64),
            "actor": r.get::<_, String>(2)?,
            "remote": r.get::<_, Option<String>>(3)?,
            "changes": serde_json::from_str::<Value>(&changes).unwrap_or(Value::Null),
            "before": r.get::<_, String>(5)?,
            "after": r.get::<_, String>(6)?,
            "file": r.get::<_, Option<String>>(7)?,
        }))
    })?;
    rows.collect()
}

/// The evidence file named by alert `id`'s record: `None` when there is no such alert,
/// `Some(None)` when its packets were not recorded.
pub fn alert_pcap(c: &Connection, id: i64) -> rusqlite::Result<Option<Option<String>>> {
    let rec: Option<String> = c
        .query_row("SELECT record FROM alerts WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(rec.map(|r| {
        serde_json::from_str::<Value>(&r)
            .ok()
            .and_then(|v| v.get("pcap").and_then(Value::as_str).map(str::to_owned))
    }))
}
