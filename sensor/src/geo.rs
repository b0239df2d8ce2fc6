//! Where an alert's remote side is: its country and autonomous system, from offline databases
//! installed with the sensor (`cargo xtask setup`; docs/DEPLOY.md, "Country and AS data"),
//! never fetched at run time. Without them every field is simply absent.
//!
//! - Country: ip-location-db's `geo-whois-asn-country` (CC0: the RIRs' delegation files and
//!   WHOIS), a MaxMind-format database read with the `maxminddb` crate.
//! - AS number and name: ip-location-db's `asn` (CC BY 4.0: RouteViews, the RIRs via the NRO,
//!   DB-IP), published as CSV ranges only; read here into sorted ranges searched by binary
//!   search (the format is four columns; a crate would buy nothing).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

/// `[geo]` in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoConfig {
    /// Directory holding `geo-whois-asn-country.mmdb` and `asn-ipv4.csv` / `asn-ipv6.csv`
    /// (what `cargo xtask setup` installs); missing files leave their fields out.
    pub dir: PathBuf,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_DIR),
        }
    }
}

pub const DEFAULT_DIR: &str = "/usr/local/share/ip-location-db";
const COUNTRY_FILE: &str = "geo-whois-asn-country.mmdb";
const ASN_FILES: [&str; 2] = ["asn-ipv4.csv", "asn-ipv6.csv"];

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("reading {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{0} is not a MaxMind database")]
    Mmdb(PathBuf, #[source] maxminddb::MaxMindDbError),
    #[error("{path}, line {line}: {problem}")]
    Csv {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// The country and AS of one address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Origin {
    #[schema(value_type = String, example = "203.0.113.7")]
    pub ip: IpAddr,
    /// ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_org: Option<String>,
}

/// Whether `ip` can have a country and an AS: a globally routed address, not private, shared
/// (CGNAT), loopback, link-local, documentation, benchmarking, multicast or reserved space.
/// The others are never looked up (and a replay of a lab's private traffic never loads the
/// databases).
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_unspecified()
                || a.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18))
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_global(IpAddr::V4(v4)),
            None => {
                let s = a.segments();
                !(a.is_loopback()
                    || a.is_unspecified()
                    || a.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80
                    || (s[0] == 0x2001 && s[1] == 0x0db8))
            }
        },
    }
}

/// The databases, loaded.
#[derive(Default)]
pub struct GeoDb {
    country: Option<maxminddb::Reader<Vec<u8>>>,
    v4: Vec<(u32, u32, u32)>,
    v6: Vec<(u128, u128, u32)>,
    orgs: HashMap<u32, Arc<str>>,
}

/// One CSV field: plain, or quoted with `""` for a quote.
fn unquote(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => s.to_owned(),
    }
}

/// The databases in `dir`, loaded once per process and shared (replays, the live loop and the
/// API read the same copy); `None` when `dir` holds none of them.
pub fn load(dir: &Path) -> Result<Option<Arc<GeoDb>>, GeoError> {
    static LOADED: std::sync::Mutex<Vec<(PathBuf, Option<Arc<GeoDb>>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, db)) = loaded.iter().find(|(d, _)| d == dir) {
        return Ok(db.clone());
    }
    let db = GeoDb::open(dir)?;
    let db = (!db.is_empty()).then(|| Arc::new(db));
    loaded.push((dir.to_owned(), db.clone()));
    Ok(db)
}

/// `[geo]`'s databases for a detector: loaded on first use (a replay that raises no alert never
/// reads them), or already loaded (`sensor run` loads them at start, so bad data stops it
/// there).
#[derive(Clone, Default)]
pub struct Geo {
    dir: Option<PathBuf>,
    db: Arc<std::sync::OnceLock<Option<Arc<GeoDb>>>>,
}

impl Geo {
    pub fn lazy(dir: &Path) -> Self {
        Self {
            dir: Some(dir.to_owned()),
            db: Arc::default(),
        }
    }

    pub fn loaded(db: Option<Arc<GeoDb>>) -> Self {
        let cell = std::sync::OnceLock::new();
        let _ignored = cell.set(db);
        Self {
            dir: None,
            db: Arc::new(cell),
        }
    }

    /// The databases, loading them the first time (an error is logged once: the alerts then
    /// carry no origin, nothing else changes).
    pub fn get(&self) -> Option<&GeoDb> {
        self.db
            .get_or_init(|| {
                let dir = self.dir.as_deref()?;
                load(dir).unwrap_or_else(|e| {
                    tracing::error!(error = %crate::report::Report(&e), "country and AS data not loaded");
                    None
                })
            })
            .as_deref()
    }
}

impl GeoDb {
    /// Loads what `dir` holds; a file that is there but unreadable is an error, one that is
    /// not there leaves its fields out.
    pub fn open(dir: &Path) -> Result<Self, GeoError> {
        let mut db = Self::default();
        let country = dir.join(COUNTRY_FILE);
        if country.exists() {
            db.country = Some(
                maxminddb::Reader::open_readfile(&country)
                    .map_err(|e| GeoError::Mmdb(country.clone(), e))?,
            );
        }
        for f in ASN_FILES {
            let path = dir.join(f);
            if path.exists() {
                db.load_asn(&path)?;
            }
        }
        db.v4.sort_unstable();
        db.v6.sort_unstable();
        Ok(db)
    }

    /// One CSV of AS ranges. Read whole and split in place: one allocation per AS name, not
    /// per line (a replay that raises an alert about a public address loads it: 515,000
    /// lines).
    fn load_asn(&mut self, path: &Path) -> Result<(), GeoError> {
        let text = std::fs::read_to_string(path).map_err(|e| GeoError::Read(path.to_owned(), e))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |problem: &str| GeoError::Csv {
                path: path.to_owned(),
                line: i + 1,
                problem: problem.to_owned(),
            };
            let mut it = line.splitn(4, ',');
            let (Some(start), Some(end), Some(asn)) = (it.next(), it.next(), it.next()) else {
                return Err(bad("expected start,end,asn,organisation"));
            };
            let asn: u32 = asn
                .trim()
                .parse()
                .map_err(|_| bad("the AS number is not a number"))?;
            let parse = |s: &str| {
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| bad("not an address"))
            };
            match (parse(start)?, parse(end)?) {
                (IpAddr::V4(a), IpAddr::V4(b)) => self.v4.push((a.into(), b.into(), asn)),
                (IpAddr::V6(a), IpAddr::V6(b)) => self.v6.push((a.into(), b.into(), asn)),
                _ => return Err(bad("a range mixes IPv4 and IPv6")),
            }
            if !self.orgs.contains_key(&asn)
                && let Some(org) = it.next().map(unquote).filter(|o| !o.is_empty())
            {
                self.orgs.insert(asn, Arc::from(org.as_str()));
            }
        }
        Ok(())
    }

    /// Whether any database is loaded.
    pub fn is_empty(&self) -> bool {
        self.country.is_none() && self.v4.is_empty() && self.v6.is_empty()
    }

    fn asn(&self, ip: IpAddr) -> Option<u32> {
        fn find<T: Ord + Copy>(ranges: &[(T, T, u32)], x: T) -> Option<u32> {
            let i = ranges.partition_point(|r| r.0 <= x);
            let r = ranges.get(i.checked_sub(1)?)?;
            (x <= r.1).then_some(r.2)
        }
        match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => find(&self.v4, u32::from(v4)),
                None => find(&self.v6, u128::from(a)),
            },
        }
    }

    fn country(&self, ip: IpAddr) -> Option<String> {
        #[derive(Deserialize)]
        struct Rec {
            country_code: Option<String>,
        }
        let r = self.country.as_ref()?.lookup(ip).ok()?;
        r.decode::<Rec>().ok().flatten()?.country_code
    }

    /// What the databases say of `ip` (`None` when they say nothing).
    pub fn lookup(&self, ip: IpAddr) -> Option<Origin> {
        let country = self.country(ip);
        let asn = self.asn(ip).filter(|a| *a != 0);
        if country.is_none() && asn.is_none() {
            return None;
        }
        Some(Origin {
            ip,
            country,
            asn,
            as_org: asn.and_then(|a| self.orgs.get(&a)).map(|o| o.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// Known entries of the installed databases (`cargo xtask setup`); where they are not
    /// installed the test says so, and fails when `cargo xtask test` requires them.
    #[test]
    fn known_addresses_have_their_country_and_as() {
        let dir = Path::new(DEFAULT_DIR);
        if !dir.join(COUNTRY_FILE).exists() {
            assert!(
                std::env::var("SENSOR_REQUIRE_KERNEL_TESTS").is_err(),
                "{DEFAULT_DIR} is empty: cargo xtask setup installs the country and AS data"
            );
            eprintln!("SKIPPED geo lookups: no data in {DEFAULT_DIR}");
            return;
        }
        let db = GeoDb::open(dir).expect("the installed data loads");
        let google = db.lookup(ip("8.8.8.8")).expect("8.8.8.8 is known");
        assert_eq!(
            (
                google.country.as_deref(),
                google.asn,
                google.as_org.as_deref()
            ),
            (Some("US"), Some(15169), Some("Google LLC")),
        );
        let cf = db.lookup(ip("1.1.1.1")).expect("1.1.1.1 is known");
        assert_eq!(cf.asn, Some(13335), "{cf:?}");
        let v6 = db
            .lookup(ip("2001:4860:4860::8888"))
            .expect("Google's resolver over IPv6");
        assert_eq!(v6.asn, Some(15169), "{v6:?}");
        // IPv4-mapped is the IPv4 address; private space has no origin.
        assert_eq!(
            db.lookup(ip("::ffff:8.8.8.8")).and_then(|o| o.asn),
            Some(15169)
        );
        assert_eq!(db.lookup(ip("10.1.2.3")), None);
    }

    #[test]
    fn only_global_addresses_have_an_origin() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "100.128.0.1",
        ] {
            assert!(is_global(ip(a)), "{a}");
        }
        for a in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "224.0.0.1",
            "0.1.2.3",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_global(ip(a)), "{a}");
        }
    }

    #[test]
    fn without_data_nothing_is_known_and_bad_data_is_an_error_naming_its_line() {
        let dir = std::env::temp_dir().join(format!("sensor-geo-{}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = GeoDb::open(&dir).expect("an empty directory is no error");
        assert!(db.is_empty());
        assert_eq!(db.lookup(ip("8.8.8.8")), None);
        std::fs::write(
            dir.join("asn-ipv4.csv"),
            "192.0.2.0,192.0.2.255,64500,\"Example \"\"Test\"\", Inc.\"\n198.51.100.0,198.51.100.127,64501,Plain\n",
        )
        .expect("csv");
        let db = GeoDb::open(&dir).expect("loads");
        let o = db.lookup(ip("192.0.2.77")).expect("in the range");
        assert_eq!(
            (o.asn, o.as_org.as_deref(), o.country),
            (Some(64500), Some("Example \"Test\", Inc."), None)
        );
        assert_eq!(
            db.lookup(ip("198.51.100.200")),
            None,
            "past the range's end"
        );
        std::fs::write(
            dir.join("asn-ipv6.csv"),
            "2001:db8::,2001:db8::ffff,sixty\n",
        )
        .expect("csv");
        let e = GeoDb::open(&dir).err().expect("a bad line is an error");
        assert!(e.to_string().contains("asn-ipv6.csv, line 1"), "{e}");
        let _ignored = std::fs::remove_dir_all(&dir);
    }
}
