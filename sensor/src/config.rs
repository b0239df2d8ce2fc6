//! The TOML configuration file. Every section and key is optional (`#[serde(default)]`);
//! unknown keys are errors, so a typo does not silently leave a default in force.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{detect::RuleConfig, store::Retention, webhook::WebhookConfig};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub rules: RuleConfig,
    pub store: Retention,
    pub webhook: WebhookConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }
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
        assert!(e.to_string().contains("port_scan_port"), "{e}");
        assert_eq!(
            toml::from_str::<Config>("").expect("empty"),
            Config::default()
        );
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
