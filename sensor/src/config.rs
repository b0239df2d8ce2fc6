//! The TOML configuration file. Every section and key is optional (`#[serde(default)]`);
//! unknown keys are errors, so a typo does not silently leave a default in force.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    check::Invalid,
    detect::{RuleConfig, ml::iforest::ForestParams},
    evidence::EvidenceConfig,
    flow::FlowConfig,
    mitigate::{MitigationConfig, upstream::BgpConfig},
    networks::NetworksConfig,
    sink::{
        OutputConfig, email::EmailConfig, eve::EveConfig, ipfix::IpfixConfig, store::Retention,
        syslog::SyslogConfig, webhook::WebhookConfig,
    },
};

/// The whole configuration. Every path reads it from here: `sensor replay`, `sensor run` (both
/// capture kinds), `sensor train`, and the API's replay and training. Command-line flags, where
/// given, override the file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The networks the sensor protects, and their groups.
    pub networks: NetworksConfig,
    pub flow: FlowSettings,
    pub rules: RuleConfig,
    pub model: ModelSettings,
    pub store: Retention,
    pub webhook: WebhookConfig,
    pub mitigation: MitigationConfig,
    /// Mitigation upstream over BGP (FlowSpec, RTBH), off by default.
    pub bgp: BgpConfig,
    /// Country and AS data for alerts, suspicious IPs and top talkers.
    pub geo: crate::geo::GeoConfig,
    /// What the rules saw, kept on disk for dry runs of rule changes (`sensor run`).
    pub history: crate::history::HistoryConfig,
    pub evidence: EvidenceConfig,
    pub eve: EveConfig,
    pub syslog: SyslogConfig,
    pub ipfix: IpfixConfig,
    pub email: EmailConfig,
}

/// `[flow]`: flow-table timeouts and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowSettings {
    /// Seconds without a packet after which a flow is finished.
    pub idle_timeout_s: u64,
    /// Seconds after which a long flow is reported and restarted.
    pub active_timeout_s: u64,
    /// Seconds a closed TCP connection (FIN both ways, or RST) waits for late packets.
    pub close_timeout_s: u64,
    /// Most flows held at once; packets of new flows beyond it are counted and dropped.
    pub max_flows: usize,
}

impl Default for FlowSettings {
    fn default() -> Self {
        let d = FlowConfig::default();
        Self {
            idle_timeout_s: d.idle_timeout.as_secs(),
            active_timeout_s: d.active_timeout.as_secs(),
            close_timeout_s: d.close_timeout.as_secs(),
            max_flows: d.max_flows,
        }
    }
}

impl FlowSettings {
    /// The flow table's settings.
    pub fn table(&self) -> FlowConfig {
        FlowConfig {
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            active_timeout: Duration::from_secs(self.active_timeout_s),
            close_timeout: Duration::from_secs(self.close_timeout_s),
            max_flows: self.max_flows,
        }
    }
}

/// `[model]`: how `sensor train` and the API's training fit the Isolation Forest.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Expected share of anomalies in the baseline; sets the score threshold (0 to 0.5).
    pub contamination: f64,
    pub trees: usize,
    pub sample_size: usize,
    pub seed: u64,
    /// Model alerts opened per minute at most; the excess folds into one summary alert.
    pub max_alerts_per_minute: usize,
    /// Distinct anomalous sources at one destination (within a minute) after which its
    /// anomalies are one alert about the destination, not one per (possibly forged) source.
    pub victim_sources: usize,
    /// Training picks the threshold so the baseline raises at most this many model alerts
    /// an hour, when the baseline is long enough to count alerts per hour on
    /// (`detect::ml::model::MIN_BUDGET_BASELINE_S`); a shorter one falls back to the
    /// contamination quantile and says so. Unset: contamination decides.
    pub max_alerts_per_hour: Option<f64>,
    /// `budget` (default): the alert budget above; `contamination`: the quantile always.
    pub threshold: ThresholdChoice,
}

/// How training picks the model's threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdChoice {
    #[default]
    Budget,
    Contamination,
}

/// Model alerts per baseline hour training aims at by default: an operator reads one; the
/// contamination quantile on a quiet baseline means hundreds.
pub const DEFAULT_ALERT_BUDGET: f64 = 1.0;

impl ModelSettings {
    /// The alert budget training applies, if any.
    pub fn budget(&self) -> Option<f64> {
        match self.threshold {
            ThresholdChoice::Budget => self.max_alerts_per_hour,
            ThresholdChoice::Contamination => None,
        }
    }
}

impl Default for ModelSettings {
    fn default() -> Self {
        let p = ForestParams::default();
        Self {
            contamination: 0.1,
            trees: p.trees,
            sample_size: p.sample_size,
            seed: p.seed,
            max_alerts_per_minute: 30,
            victim_sources: 10,
            max_alerts_per_hour: Some(DEFAULT_ALERT_BUDGET),
            threshold: ThresholdChoice::Budget,
        }
    }
}

impl ModelSettings {
    /// How many model alerts may open, and when they aggregate per victim.
    pub fn volume(&self) -> crate::detect::AlertVolume {
        crate::detect::AlertVolume {
            per_minute: self.max_alerts_per_minute.max(1),
            victim_sources: self.victim_sources.max(2),
        }
    }

    pub fn forest(&self) -> ForestParams {
        ForestParams {
            trees: self.trees.max(1),
            sample_size: self.sample_size.max(2),
            seed: self.seed,
        }
    }
}

/// Operator rules a config may hold.
pub const MAX_CUSTOM_RULES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    /// The sections of the network and file outputs, each of which builds its output: adding
    /// an output is its file, its field above, and its entry here.
    pub fn outputs(&self) -> [&dyn OutputConfig; 5] {
        [
            &self.webhook,
            &self.eve,
            &self.syslog,
            &self.ipfix,
            &self.email,
        ]
    }

    /// `path`'s config, or the defaults when there is none.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }

    /// Checks values serde cannot (ranges, addresses): each section its own.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if let Some(n) = self.model.max_alerts_per_hour
            && !(n.is_finite() && n >= 0.0)
        {
            return Err(Invalid::new(
                "model.max_alerts_per_hour",
                format!("must be a number >= 0, not {n}"),
            ));
        }
        if !(0.0..=0.5).contains(&self.model.contamination) {
            return Err(Invalid::new(
                "model.contamination",
                format!("must be within 0 and 0.5, not {}", self.model.contamination),
            ));
        }
        self.networks.check()?;
        let groups: Vec<String> = self
            .networks
            .hostgroups
            .iter()
            .map(|g| g.name.clone())
            .collect();
        // Each operator rule is checked against every flow update: a bound keeps a pasted
        // thousand-rule file from slowing the live loop.
        if self.rules.custom.len() > MAX_CUSTOM_RULES {
            return Err(Invalid::new(
                "rules.custom",
                format!(
                    "{} operator rules: at most {MAX_CUSTOM_RULES}",
                    self.rules.custom.len()
                ),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.rules.custom {
            r.check(&groups, !self.networks.home.is_empty())?;
            if !names.insert(r.name.as_str()) {
                return Err(Invalid::new(
                    "rules.custom",
                    format!("two rules are named `{}`", r.name),
                ));
            }
            // Known from the config on: the API's kind filter takes it (also `sensor serve`).
            crate::record::AlertKind::custom(&r.name);
        }
        self.mitigation.check()?;
        self.bgp.check(!self.networks.home.is_empty())?;
        self.evidence.check()?;
        self.history.check()?;
        for o in self.outputs() {
            o.check()?;
        }
        if self.flow.idle_timeout_s == 0 {
            return Err(Invalid::new("flow.idle_timeout_s", "must be positive"));
        }
        if self.flow.max_flows == 0 {
            return Err(Invalid::new("flow.max_flows", "must be positive"));
        }
        Ok(())
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks a config file's text (`path` names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let c = toml::from_str::<Self>(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: located(text, &e),
        })?;
        c.validate().map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: key_located(text, &e),
        })?;
        Ok(c)
    }
}

/// A refused value as an operator fixes it: the line that sets the key, when the file does
/// (a default that another key makes invalid has none).
pub(crate) fn key_located(text: &str, e: &Invalid) -> String {
    let (table, key) = e.key.split_once('.').unwrap_or(("", e.key));
    let mut in_table = table.is_empty();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            in_table = l.trim_matches(|c| c == '[' || c == ']').trim() == table;
        } else if in_table
            && l.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
        {
            return format!("line {}, key `{}`: {}", n + 1, e.key, e.problem);
        }
    }
    format!("key `{}`: {}", e.key, e.problem)
}

/// A TOML error as an operator fixes it: the line, the key (with its table) and what is wrong,
/// on one line (the parser's own text spans several, with a caret).
pub(crate) fn located(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_owned();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    // The table the line is in: the nearest `[header]` above it.
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let what = match (table, key) {
        (Some(t), Some(k)) => format!(", key `{t}.{k}`"),
        (None, Some(k)) => format!(", key `{k}`"),
        (Some(t), None) => format!(", table [{t}]"),
        (None, None) => String::new(),
    };
    format!("line {line_no}{what}: {}", e.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_keep_defaults_and_typos_are_errors() {
        let c: Config = toml::from_str("[rules]\nport_scan_ports = 15\n").expect("valid");
        assert_eq!(c.rules.port_scan_ports, 15);
        assert_eq!(
            c.rules.host_sweep_hosts,
            RuleConfig::default().host_sweep_hosts
        );
        let e = toml::from_str::<Config>("[rules]\nport_scan_port = 15\n").expect_err("typo");
        let bad = Config::from_toml(
            "# sensor\n[rules]\nport_scan_ports = \"x\"\n",
            Path::new("bad.toml"),
        )
        .expect_err("a string for a number");
        let msg = bad.to_string();
        assert!(
            msg.starts_with("bad.toml: invalid config: line 3, key `rules.port_scan_ports`: ")
                && msg.contains("invalid type"),
            "{msg}"
        );
        assert!(e.to_string().contains("port_scan_port"), "{e}");
        assert_eq!(
            toml::from_str::<Config>("").expect("empty"),
            Config::default()
        );
    }

    #[test]
    fn networks_and_hostgroups_load_and_bad_prefixes_name_their_line() {
        let text = "[networks]\nhome = [\"10.77.1.0/24\", \"2001:db8::/32\"]\n\n\
                    [[networks.hostgroups]]\nname = \"web\"\nprefixes = [\"10.77.1.10\"]\n";
        let c = Config::from_toml(text, Path::new("s.toml")).expect("valid");
        let n = c.networks.build();
        let web: std::net::IpAddr = "10.77.1.10".parse().expect("ip");
        assert!(n.is_home(web));
        assert_eq!(n.hostgroup(web), Some("web"));
        let e = Config::from_toml(
            "[networks]\nhome = [\"10.0.0.0/33\"]\n",
            Path::new("s.toml"),
        )
        .expect_err("a /33");
        assert!(
            e.to_string()
                .starts_with("s.toml: invalid config: line 2, key `networks.home`: `10.0.0.0/33`"),
            "{e}"
        );
    }

    #[test]
    fn a_refused_value_names_the_line_that_sets_it() {
        let text = "[rules]\nport_scan_ports = 15\n\n[mitigation]\n# a week at most\nttl_s = 0\n";
        let e = Config::from_toml(text, Path::new("s.toml")).expect_err("ttl 0");
        assert_eq!(
            e.to_string(),
            "s.toml: invalid config: line 6, key `mitigation.ttl_s`: must be within 1 and \
             604800, not 0"
        );
        // A key the file does not set (the default is what another key makes invalid).
        let e = Config::from_toml("[evidence]\ntotal_bytes = 5000\n", Path::new("s.toml"))
            .expect_err("total below the default file size");
        assert!(
            e.to_string()
                .starts_with("s.toml: invalid config: key `evidence.max_file_bytes`: "),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("sensor-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("bad.toml");
        std::fs::write(&p, "[model]\ncontamination = 0.9\n").expect("write");
        let e = Config::load(&p).expect_err("contamination 0.9");
        let msg = e.to_string();
        assert!(
            msg.contains("bad.toml") && msg.contains("contamination"),
            "{msg}"
        );
        std::fs::write(&p, "[flow]\nidle_timeout_s = 30\n[model]\ntrees = 7\n").expect("write");
        let c = Config::load(&p).expect("valid");
        assert_eq!(
            (
                c.flow.table().idle_timeout.as_secs(),
                c.model.forest().trees
            ),
            (30, 7)
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_shipped_sample_config_parses_and_documents_the_defaults() {
        let sample: Config = toml::from_str(include_str!("../../deploy/sensor.toml"))
            .expect("deploy/sensor.toml parses");
        assert_eq!(
            sample,
            Config::default(),
            "deploy/sensor.toml must show the defaults"
        );
    }
}

#[cfg(test)]
mod custom_rule_tests {
    use super::*;

    /// An operator rule loads from `[[rules.custom]]`; a bad one is refused naming the rule and
    /// the field, a second rule of the same name too, a misspelt key with its line.
    #[test]
    fn operator_rules_load_and_bad_ones_are_refused() {
        let rule = "[[rules.custom]]\nname = \"rdp_connections\"\nproto = \"tcp\"\n\
                    dst_ports = [3389]\nsyn_only = true\ncount = \"flows\"\nwindow_s = 60\nthreshold = 50\n";
        let c = Config::from_toml(rule, Path::new("s.toml")).expect("valid");
        assert_eq!(c.rules.custom.len(), 1);
        assert_eq!(c.rules.custom[0].threshold, 50);
        let twice = format!("{rule}{rule}");
        let e = Config::from_toml(&twice, Path::new("s.toml")).expect_err("two of a name");
        assert!(
            e.to_string()
                .contains("two rules are named `rdp_connections`"),
            "{e}"
        );
        let bad = rule.replace("proto = \"tcp\"\n", "");
        let e = Config::from_toml(&bad, Path::new("s.toml")).expect_err("ports without proto");
        assert!(
            e.to_string()
                .contains("rule `rdp_connections`: dst_ports/src_ports need proto"),
            "{e}"
        );
        let typo = rule.replace("threshold = 50", "treshold = 50");
        let e = Config::from_toml(&typo, Path::new("s.toml")).expect_err("misspelt key");
        assert!(e.to_string().contains("line"), "{e}");
    }
}
