//! The rules as the dashboard's editor and the API change them: `[rules]` (built-in
//! thresholds) and its `[[rules.custom]]` (operator rules) as TOML text, checked as the config
//! file is, written back into the config file atomically with the previous file kept, and
//! described change by change for the audit table.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, key_located, located},
    detect::RuleConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum RulesetError {
    /// The text does not parse, or a value is refused: line and key named.
    #[error("invalid rules: {0}")]
    Invalid(String),
    #[error("cannot write the config file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file changed on disk since the sensor read it, into something that no
    /// longer parses: it is not overwritten.
    #[error("the config file {path} does not parse any more ({message}); it was not changed")]
    FileChanged { path: PathBuf, message: String },
}

/// What the editor sends: a `[rules]` table and its operator rules, nothing else.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RulesOnly {
    rules: RuleConfig,
}

/// Changed rules from `text` (`[rules]` and `[[rules.custom]]`; keys left out take their
/// defaults), checked against `base` (its hostgroups and home networks) as a config file is.
/// Errors name the line of `text`.
pub fn parse(text: &str, base: &Config) -> Result<RuleConfig, RulesetError> {
    let only: RulesOnly =
        toml::from_str(text).map_err(|e| RulesetError::Invalid(located(text, &e)))?;
    let mut full = base.clone();
    full.rules = only.rules;
    full.validate()
        .map_err(|e| RulesetError::Invalid(key_located(text, &e)))?;
    Ok(full.rules)
}

/// `rules` as TOML: the keys that differ from the defaults (a default that changes in a later
/// release then applies), then each operator rule, its fields in the order the docs give them.
pub fn to_toml(rules: &RuleConfig) -> String {
    let defaults = flat(&RuleConfig::default());
    let mut mine = flat(rules);
    mine.retain(|k, v| k != "custom" && defaults.get(k) != Some(v));
    let mut text = String::from("[rules]\n");
    text.push_str(&toml::to_string(&mine).unwrap_or_default());
    let custom = custom_toml(rules);
    if !custom.is_empty() {
        text.push('\n');
        text.push_str(&custom);
    }
    text
}

/// The operator rules alone, as `[[rules.custom]]` blocks (the editor's text box).
pub fn custom_toml(rules: &RuleConfig) -> String {
    #[derive(Serialize)]
    struct Custom<'a> {
        custom: &'a [crate::detect::rules::custom::CustomRule],
    }
    #[derive(Serialize)]
    struct Doc<'a> {
        rules: Custom<'a>,
    }
    if rules.custom.is_empty() {
        return String::new();
    }
    let text = toml::to_string(&Doc {
        rules: Custom {
            custom: &rules.custom,
        },
    })
    .unwrap_or_default();
    text.strip_prefix("[rules]\n")
        .unwrap_or(&text)
        .trim_start()
        .to_owned()
}

/// The built-in keys of `rules` (and `custom`) as one TOML table.
fn flat(r: &RuleConfig) -> toml::Table {
    match toml::Value::try_from(RulesOnly { rules: r.clone() }) {
        Ok(toml::Value::Table(mut t)) => match t.remove("rules") {
            Some(toml::Value::Table(r)) => r,
            _ => toml::Table::new(),
        },
        _ => toml::Table::new(),
    }
}

/// What each change of `after` against `before` is, one line each (built-in keys as
/// `key: old -> new`, operator rules by name).
pub fn describe(before: &RuleConfig, after: &RuleConfig) -> Vec<String> {
    let (a, b) = (flat(before), flat(after));
    let mut out = Vec::new();
    for (k, new) in &b {
        if k == "custom" {
            continue;
        }
        match a.get(k) {
            Some(old) if old == new => {}
            Some(old) => out.push(format!("{k}: {old} -> {new}")),
            None => out.push(format!("{k}: {new}")),
        }
    }
    for r in &after.custom {
        match before.custom.iter().find(|o| o.name == r.name) {
            None => out.push(format!("operator rule `{}` added", r.name)),
            Some(o) if o != r => out.push(format!("operator rule `{}` changed", r.name)),
            Some(_) => {}
        }
    }
    for o in &before.custom {
        if !after.custom.iter().any(|r| r.name == o.name) {
            out.push(format!("operator rule `{}` removed", o.name));
        }
    }
    out
}

/// One change of the rules, for the audit table (`rule_changes`) and the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RuleChange {
    /// Wall-clock time of the change, ns since the epoch.
    pub ts_ns: u64,
    /// The name the operator gave (the API token is shared; this says who used it).
    pub actor: String,
    /// The client's address.
    pub remote: Option<String>,
    /// One line per change ([`describe`]).
    pub changes: Vec<String>,
    /// `[rules]` before and after, as [`to_toml`] writes them.
    pub before: String,
    pub after: String,
    /// The config file written (none: the sensor runs without one, the change is live only).
    pub file: Option<String>,
}

/// Where a write left the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// The file as it was before (none when there was no file).
    pub previous: Option<PathBuf>,
}

/// Replaces the `[rules]` of the config file at `path` with `rules`, keeping every other
/// section (and its comments) as it is: the new file is written beside it, synced, the old
/// one kept as `NAME.prev`, and the new one renamed over it (a reader sees the old file or the
/// new one, never a part).
pub fn write(path: &Path, rules: &RuleConfig) -> Result<Written, RulesetError> {
    let werr = |source| RulesetError::Write {
        path: path.into(),
        source,
    };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(werr(e)),
    };
    let changed = |message: String| RulesetError::FileChanged {
        path: path.into(),
        message,
    };
    let mut doc: toml_edit::DocumentMut = old
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e: toml_edit::TomlError| changed(e.message().to_owned()))?;
    // The comments above the old `[rules]` header go above the new one.
    let above = doc
        .get("rules")
        .and_then(toml_edit::Item::as_table)
        .and_then(|t| t.decor().prefix())
        .and_then(|p| p.as_str())
        .map(|p| p.trim_start_matches('\n').to_owned())
        .unwrap_or_default();
    doc.remove("rules");
    let mut text = doc.to_string();
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push_str(if text.ends_with('\n') { "\n" } else { "\n\n" });
    }
    text.push_str(&above);
    text.push_str(&to_toml(rules));
    // What is written must read back as these rules (they were checked against the running
    // networks by `parse`; a rules file has no networks of its own to check them against).
    let back: Config = toml::from_str(&text).map_err(|e| changed(located(&text, &e)))?;
    if back.rules != *rules {
        return Err(changed(
            "the rules written do not read back the same".into(),
        ));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.new"));
    let mut f = std::fs::File::create(&tmp).map_err(werr)?;
    f.write_all(text.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    let previous = match old {
        Some(t) => {
            let prev = dir.join(format!("{name}.prev"));
            std::fs::write(&prev, t).map_err(werr)?;
            Some(prev)
        }
        None => None,
    };
    std::fs::rename(&tmp, path).map_err(werr)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ignored = d.sync_all();
    }
    Ok(Written {
        path: path.into(),
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# The lab's sensor.\n[networks]\nhome = [\"10.77.1.0/24\"]\n\n\
        [[networks.hostgroups]]\nname = \"servers\"\nprefixes = [\"10.77.1.0/25\"]\n\n\
        # thresholds, see docs/DETECTION.md\n[rules]\n# tuned for the lab\nport_scan_ports = 30\n\n\
        [mitigation]\n# blocks expire\nttl_s = 120\n";

    #[test]
    fn rules_text_is_checked_with_lines_and_against_the_networks() {
        let base = Config::from_toml(FILE, Path::new("t.toml")).expect("base");
        let ok = parse(
            "[rules]\nport_scan_ports = 15\n\n[[rules.custom]]\nname = \"rdp\"\nproto = \"tcp\"\n\
             dst_ports = [3389]\nhostgroup = \"servers\"\ncount = \"flows\"\nwindow_s = 60\n\
             threshold = 50\n",
            &base,
        )
        .expect("valid");
        assert_eq!(ok.port_scan_ports, 15);
        assert_eq!(ok.custom.len(), 1);
        // Keys left out are defaults, not the running values.
        assert_eq!(ok.host_sweep_hosts, RuleConfig::default().host_sweep_hosts);
        let bad = |t: &str| parse(t, &base).expect_err(t).to_string();
        let e = bad("[rules]\nport_scan_ports = \"many\"\n");
        assert!(e.contains("line 2") && e.contains("port_scan_ports"), "{e}");
        let e = bad("[rules]\nport_scan_portz = 3\n");
        assert!(e.contains("line 2") && e.contains("port_scan_portz"), "{e}");
        let e = bad("[flow]\nmax_flows = 3\n");
        assert!(e.contains("flow"), "{e}");
        let many: String = (0..=crate::config::MAX_CUSTOM_RULES)
            .map(|i| {
                format!(
                    "[[rules.custom]]\nname = \"r{i}\"\ncount = \"flows\"\nwindow_s = 60\nthreshold = 5\n"
                )
            })
            .collect();
        let e = bad(&many);
        assert!(e.contains("at most 256"), "{e}");
        let e = bad(
            "[rules]\n[[rules.custom]]\nname = \"x\"\nhostgroup = \"nope\"\ncount = \"flows\"\n\
             window_s = 60\nthreshold = 5\n",
        );
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn the_file_keeps_its_other_sections_and_the_previous_one_is_kept() {
        let dir = std::env::temp_dir().join(format!("sensor-ruleset-{}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("sensor.toml");
        std::fs::write(&path, FILE).expect("write");
        let base = Config::load(&path).expect("load");
        let mut rules = base.rules.clone();
        rules.port_scan_ports = 12;
        rules.syn_flood_max_completion_ratio = 0.25;
        rules.custom = parse(
            "[[rules.custom]]\nname = \"rdp\"\nproto = \"tcp\"\ndst_ports = [3389]\n\
             count = \"flows\"\nwindow_s = 60\nthreshold = 50\n",
            &base,
        )
        .expect("rule")
        .custom;
        let w = write(&path, &rules).expect("written");
        assert_eq!(
            std::fs::read_to_string(w.previous.expect("kept")).expect("prev"),
            FILE
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("# blocks expire\nttl_s = 120"), "{text}");
        assert!(text.contains("# The lab's sensor."), "{text}");
        assert!(
            text.contains("# thresholds, see docs/DETECTION.md\n[rules]\n"),
            "{text}"
        );
        assert!(!text.contains("port_scan_ports = 30"), "{text}");
        let back = Config::load(&path).expect("reload");
        assert_eq!(back.rules, rules);
        assert_eq!(back.mitigation, base.mitigation);
        assert_eq!(back.networks, base.networks);
        // Only what differs from the defaults is written.
        assert!(!text.contains("host_sweep_hosts"), "{text}");
        // An operator rule reads as written: name first, no empty or default-off fields.
        assert!(
            text.contains("[[rules.custom]]\nname = \"rdp\"\n"),
            "{text}"
        );
        assert!(
            !text.contains("src_ports") && !text.contains("syn_only"),
            "{text}"
        );
        assert_eq!(
            describe(&base.rules, &back.rules),
            vec![
                "port_scan_ports: 30 -> 12".to_owned(),
                "syn_flood_max_completion_ratio: 0.2 -> 0.25".to_owned(),
                "operator rule `rdp` added".to_owned()
            ]
        );
        // The editor's text box: the operator rules alone, which read back as them.
        let boxed = custom_toml(&rules);
        assert!(boxed.starts_with("[[rules.custom]]"), "{boxed}");
        assert_eq!(parse(&boxed, &base).expect("parse").custom, rules.custom);
        // No file yet: one is made with the rules alone; nothing named .prev.
        let fresh = dir.join("new.toml");
        let w = write(&fresh, &rules).expect("written");
        assert_eq!(w.previous, None);
        assert_eq!(Config::load(&fresh).expect("load").rules, rules);
        // A rules file of its own (`--rules-file`): the rules alone, a hostgroup rule included
        // (checked against the running config's groups, not the file's).
        let mut grouped = rules.clone();
        grouped.custom[0].hostgroup = Some("servers".into());
        let own = dir.join("rules.toml");
        write(&own, &grouped).expect("rules file");
        let text = std::fs::read_to_string(&own).expect("read");
        assert_eq!(parse(&text, &base).expect("parse").custom, grouped.custom);
        // A file broken on disk since start is not overwritten.
        std::fs::write(&path, "[rules\n").expect("break");
        let e = write(&path, &rules).expect_err("refused");
        assert!(e.to_string().contains("was not changed"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "[rules\n");
        std::fs::remove_dir_all(&dir).ok();
    }
}
