//! `cargo xtask setup`: installs what building and testing need, idempotently.
//!
//! Every step first checks whether its tool is already there and usable, so a machine that has
//! everything is done in well under a second. A failing step says which step it was.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Debian packages: libpcap for the fallback capture path, iproute2/ping for namespaces and
/// tests, the real traffic tools the lab and benchmarks drive, and the browser and load tools
/// of the dashboard test and the API benchmark, and tshark.
const APT_PACKAGES: &[&str] = &[
    "libpcap-dev",
    "iproute2",
    "iputils-ping",
    "tcpdump",
    "nmap",
    "hping3",
    "iperf3",
    "tcpreplay",
    // tshark reads the alerts' evidence files back in the tests (what analysts open them with)
    // and checks the EVE output's Community IDs; rsyslog receives the syslog output.
    "tshark",
    "rsyslog",
    // nfcapd/nfdump: the IPFIX test's collector.
    "nfdump",
    // The evaluation set's servers and clients: DNS reflectors and servers, DNS load, HTTP.
    "dnsmasq-base",
    "dnsperf",
    "curl",
    // Headless browser (and its WebDriver, for clicking through the controls) for the
    // dashboard tests, and a font for their screenshots.
    "chromium",
    "chromium-driver",
    "fonts-dejavu-core",
    // wrk for the API benchmark.
    "wrk",
    // The password-guessing attack of the lab: hydra against a real OpenSSH server.
    "hydra",
    "openssh-server",
    // dig: the evaluation set's beacon over DNS.
    "bind9-dnsutils",
    // Mitigation upstream: GoBGP (the speaker the sensor drives) and FRR (the upstream router
    // of the integration test and the lab).
    "gobgpd",
    "frr",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The property-based API tester `cargo xtask test` checks the OpenAPI document with, pinned
/// so that a new release's checks do not change a run's verdict unannounced.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// The LLVM major bpf-linker 0.13.0 is built against; must match nightly's own LLVM.
const LLVM_MAJOR: &str = "22";

/// Where the country and AS databases go (the sensor's `[geo] dir` default).
const GEO_DIR: &str = "/usr/local/share/ip-location-db";
/// ip-location-db's packages on the npm registry: (package, version, SHA-256 of its tarball,
/// files kept). Country: CC0; AS: CC BY 4.0 (RouteViews, NRO, DB-IP; their licence files are
/// kept beside the data). Pinned, so that a run's lookups do not change unannounced.
const GEO_PACKAGES: [(&str, &str, &str, &[&str]); 2] = [
    (
        "geo-whois-asn-country-mmdb",
        "2.3.2026061719",
        "91757a1b06cdcd1955f292e4c4cfc54e091204f998e159a3187f7a2ef3724be0",
        &["geo-whois-asn-country.mmdb", "NRO_LICENSE"],
    ),
    (
        "asn",
        "2.3.2026061719",
        "b9425daf2f011c28f8586685d4f89166e77627e2c15fd93c6262c3e2dead6153",
        &[
            "asn-ipv4.csv",
            "asn-ipv6.csv",
            "DBIP-LICENSE",
            "ROUTEVIEWS-LICENSE",
            "MODIFICATIONS",
        ],
    ),
];

/// Before every xtask command: nothing when the machine is as the last full check left it
/// (the stamp's fingerprint matches), else the full check.
pub fn ensure() -> Result<()> {
    let stamp = crate::target_dir().join(".setup-done");
    let print = fingerprint();
    if fs::read_to_string(&stamp).is_ok_and(|s| s == print) {
        return Ok(());
    }
    setup()?;
    // Taken after the install steps, which change what it covers.
    let _ignored = fs::write(&stamp, fingerprint());
    Ok(())
}

/// What the full check depends on, cheaply: this file's lists and versions, and when the
/// installed Debian packages, the toolchains, the cargo binaries and the Python packages last
/// changed (an install or removal touches them).
fn fingerprint() -> String {
    let mtime = |p: &Path| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos())
    };
    let rustup = env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_home().with_file_name(".rustup"));
    let python = Command::new("python3")
        .args(["-c", "import site; print(site.getsitepackages()[0])"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    // The steps themselves: a change of what setup installs (this file) redoes the check.
    const STEPS: &str = "rust-src+clippy on nightly, aiosmtpd, schemathesis venv, geo data";
    format!(
        "{STEPS} {APT_PACKAGES:?} {BPF_LINKER_VERSION} {LLVM_MAJOR} {SCHEMATHESIS_VERSION} {GEO_PACKAGES:?} {} {} dpkg {} rustup {} cargo-bin {} python {} {}",
        fs::read_to_string(Path::new(GEO_DIR).join(".versions")).unwrap_or_default(),
        schemathesis_bin().is_file(),
        mtime(Path::new("/var/lib/dpkg/status")),
        mtime(&rustup.join("toolchains")),
        mtime(&cargo_home().join("bin")),
        python,
        mtime(Path::new(&python)),
    )
}

/// The full check: every step looks whether its tool is there and installs what is not.
pub fn setup() -> Result<()> {
    apt_packages().context("setup step 'Debian packages'")?;
    nightly_rust_src().context("setup step 'nightly toolchain with rust-src and clippy'")?;
    bpf_linker().context("setup step 'bpf-linker'")?;
    clippy().context("setup step 'clippy'")?;
    // The email test's SMTP receiver (STARTTLS and AUTH), from PyPI.
    python_package("aiosmtpd", "aiosmtpd")?;
    schemathesis().context("setup step 'schemathesis'")?;
    geo_data().context("setup step 'country and AS data'")?;
    Ok(())
}

/// The pinned ip-location-db packages in [`GEO_DIR`], downloaded from the npm registry with
/// curl (about 26 MB once), checked against their SHA-256 and unpacked.
fn geo_data() -> Result<()> {
    let dir = Path::new(GEO_DIR);
    let want: String = GEO_PACKAGES
        .iter()
        .map(|(p, v, _, _)| format!("{p}@{v}\n"))
        .collect();
    if fs::read_to_string(dir.join(".versions")).is_ok_and(|s| s == want) {
        return Ok(());
    }
    if !is_root() {
        bail!("the country and AS data go to {GEO_DIR}, which needs root");
    }
    let tmp = crate::target_dir().join("geo-download");
    let _ignored = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    fs::create_dir_all(dir)?;
    for (pkg, version, sha, files) in GEO_PACKAGES {
        let tgz = tmp.join(format!("{pkg}-{version}.tgz"));
        let url = format!("https://registry.npmjs.org/@ip-location-db/{pkg}/-/{pkg}-{version}.tgz");
        eprintln!("setup: downloading {url}");
        run(Command::new("curl")
            .args(["-fsSL", "--retry", "3", "-o"])
            .arg(&tgz)
            .arg(&url))
        .with_context(|| format!("downloading {url}"))?;
        let sum = output(Command::new("sha256sum").arg(&tgz))?;
        if sum.split_whitespace().next() != Some(sha) {
            bail!("{url}: SHA-256 {sum} is not the pinned {sha}");
        }
        let out = tmp.join(pkg);
        fs::create_dir_all(&out)?;
        run(Command::new("tar").arg("xzf").arg(&tgz).arg("-C").arg(&out))?;
        for f in files {
            fs::copy(out.join("package").join(f), dir.join(f))
                .with_context(|| format!("{pkg}: {f}"))?;
        }
    }
    fs::write(dir.join(".versions"), want)?;
    let _ignored = fs::remove_dir_all(&tmp);
    Ok(())
}

/// Where schemathesis lives: a virtualenv of its own (it pins many libraries, which must not
/// move under the other Python tools), kept outside the checkout so clones share it.
pub fn schemathesis_bin() -> PathBuf {
    let data = env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    data.join(format!(
        "sensor-dev/schemathesis-{SCHEMATHESIS_VERSION}/bin/st"
    ))
}

/// The venv with schemathesis at its pinned version (about 10 s and 100 MB once).
fn schemathesis() -> Result<()> {
    let st = schemathesis_bin();
    if st.is_file() {
        return Ok(());
    }
    let venv = st
        .parent()
        .and_then(Path::parent)
        .context("schemathesis path")?;
    eprintln!(
        "setup: schemathesis {SCHEMATHESIS_VERSION} into {}",
        venv.display()
    );
    let _ignored = fs::remove_dir_all(venv);
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
    ]))
}

/// clippy for the stable toolchain (`cargo xtask test` lints with it).
fn clippy() -> Result<()> {
    let present = Command::new("cargo")
        .args(["clippy", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("setup: installing clippy");
    let st = Command::new("rustup")
        .args(["component", "add", "clippy"])
        .status()?;
    if !st.success() {
        bail!("rustup component add clippy failed ({st})");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing {missing:?}; installing them needs root (apt-get install -y {})",
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages {missing:?}");
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get update (is the Debian mirror reachable?)")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("apt-get install {}", missing.join(" ")))
}

fn nightly_rust_src() -> Result<()> {
    let has_nightly = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the eBPF program")?
        .lines()
        .any(|l| l.starts_with("nightly"));
    if !has_nightly {
        eprintln!("setup: installing the nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
            "--component",
            "clippy",
        ]))?;
        return Ok(());
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    // rust-src builds the XDP program; clippy lints it (`cargo xtask test`).
    for component in ["rust-src", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            eprintln!("setup: adding {component} to nightly");
            run(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                "nightly",
            ]))?;
        }
    }
    Ok(())
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// bpf-linker on PATH or in cargo's bin dir, if it runs and is the pinned version.
fn working_bpf_linker() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("bpf-linker"),
        cargo_home().join("bin/bpf-linker"),
    ];
    candidates.into_iter().find(|c| {
        Command::new(c).arg("--version").output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
    })
}

/// The nightly toolchain's own libLLVM, which bpf-linker links against so both agree on LLVM.
fn nightly_libllvm() -> Result<PathBuf> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let found = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let name = found
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let major = name
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default();
    if major != LLVM_MAJOR {
        bail!(
            "nightly ships LLVM {major} ({name}); bpf-linker {BPF_LINKER_VERSION} is built here for LLVM {LLVM_MAJOR}"
        );
    }
    Ok(found)
}

fn bpf_linker() -> Result<()> {
    if let Some(found) = working_bpf_linker() {
        prepend_path(found.parent().filter(|p| !p.as_os_str().is_empty()));
        return Ok(());
    }
    let libllvm = nightly_libllvm()?;
    let name = libllvm
        .file_name()
        .context("libLLVM path has a file name")?;
    // A stable place (not the clone, not /tmp): the installed binary keeps a run path into it.
    let prefix = cargo_home().join("bpf-linker-llvm").join(name);
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for link in [lib.join("libLLVM.so"), lib.join(name)] {
        let _ignored = fs::remove_file(&link);
        symlink(&libllvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {} (about 90 s)",
        libllvm.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
        ])
        .args(["--features", &format!("llvm-{LLVM_MAJOR}")])
        .env("LLVM_PREFIX", &prefix))
    .context("cargo install bpf-linker (needs crates.io)")?;
    let found = working_bpf_linker().context("bpf-linker was installed but does not run")?;
    prepend_path(found.parent());
    Ok(())
}

/// Makes a freshly installed tool visible to the cargo builds this process starts.
fn prepend_path(dir: Option<&Path>) {
    let Some(dir) = dir else { return };
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|p| p == dir) {
        return;
    }
    let joined = env::join_paths(std::iter::once(dir.to_path_buf()).chain(env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: xtask is single-threaded at this point.
        unsafe { env::set_var("PATH", joined) };
    }
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs a Python package (a benchmark's peer, a test's receiver) if `import module` fails.
pub fn python_package(module: &str, package: &str) -> Result<()> {
    let has = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if has {
        return Ok(());
    }
    eprintln!("setup: pip install {package}");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", package]))
        .with_context(|| format!("setup step 'pip install {package}'"))
}
