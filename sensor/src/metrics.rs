//! The sensor's counters and gauges, each declared by the component that counts it.
//!
//! A component asks the [`Registry`] for a [`Counter`] or [`Gauge`] by name and help text
//! where it is built, and counts into it; `/metrics` renders whatever was registered, and
//! `/api/status` reads values by name. Adding a metric touches one file: the counting one.
//!
//! Hand-written (about a hundred lines) rather than `prometheus-client`: the exposition stays
//! the Prometheus text format 0.0.4 that scrapers and this project's tests read, values are
//! plain relaxed atomics the packet and poll paths update without a lock, and a component
//! built without a registry (a replay) counts into cells nobody renders.

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

/// A value that only goes up (or is a running total copied from the kernel).
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Sets the total from a source that keeps it (the kernel's counters, a table's tally).
    pub fn set_total(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (queue depth, entries in force).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    /// Raises the value to `n` if it is lower (a maximum since start).
    pub fn raise_to(&self, n: u64) {
        self.0.fetch_max(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A metric read from a field of shared state: (name, help, the read).
pub type ReadField<S> = (&'static str, &'static str, fn(&S) -> u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Where a metric's value comes from: a cell the component counts into, or a read of state
/// the component keeps anyway (a writer's queue depth), taken at scrape time.
enum Source {
    Cell(Arc<AtomicU64>),
    Read(Box<dyn Fn() -> u64 + Send + Sync>),
}

impl Source {
    fn get(&self) -> u64 {
        match self {
            Self::Cell(c) => c.load(Ordering::Relaxed),
            Self::Read(f) => f(),
        }
    }
}

struct Entry {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    source: Source,
}

/// The metrics of one running sensor. Cheap to clone (one shared list).
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Vec<Entry>>>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_list().entries(list.iter().map(|e| e.name)).finish()
    }
}

impl Registry {
    /// A counter named `name` (by convention ending in `_total`). Asking twice for the same
    /// name returns the same cell, so two parts that count one thing share it.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        Counter(self.cell(name, help, Kind::Counter))
    }

    pub fn gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        Gauge(self.cell(name, help, Kind::Gauge))
    }

    /// A counter whose value `read` takes from state the component keeps (read at scrape).
    pub fn counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.add(name, help, Kind::Counter, Source::Read(Box::new(read)));
    }

    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.add(name, help, Kind::Gauge, Source::Read(Box::new(read)));
    }

    /// Counters read at scrape time from the fields of a component's shared state.
    pub fn counters_of<S: Send + Sync + 'static>(&self, state: &Arc<S>, list: &[ReadField<S>]) {
        for &(name, help, read) in list {
            let s = Arc::clone(state);
            self.counter_fn(name, help, move || read(&s));
        }
    }

    fn cell(&self, name: &'static str, help: &'static str, kind: Kind) -> Arc<AtomicU64> {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = list.iter().find(|e| e.name == name)
            && let Source::Cell(c) = &e.source
        {
            debug_assert_eq!(e.kind, kind, "metric {name} registered as two kinds");
            return Arc::clone(c);
        }
        list.retain(|e| e.name != name);
        let cell = Arc::new(AtomicU64::new(0));
        list.push(Entry {
            name,
            help,
            kind,
            source: Source::Cell(Arc::clone(&cell)),
        });
        cell
    }

    /// Registers a read source; a later registration of the same name replaces it (a
    /// restarted component reports its own state, not the one it replaced).
    fn add(&self, name: &'static str, help: &'static str, kind: Kind, source: Source) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|e| e.name != name);
        list.push(Entry {
            name,
            help,
            kind,
            source,
        });
    }

    /// The value of the metric `name`, if one is registered.
    pub fn value(&self, name: &str) -> Option<u64> {
        let list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.iter().find(|e| e.name == name).map(|e| e.source.get())
    }

    /// Every registered metric in the Prometheus text format, in registration order.
    pub fn render(&self, out: &mut String) {
        let list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for e in list.iter() {
            let kind = match e.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ignored = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n",
                name = e.name,
                help = e.help,
                v = e.source.get()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_rendered_once_with_its_kind_and_shared_by_name() {
        let r = Registry::default();
        let a = r.counter("x_total", "Things.");
        let b = r.counter("x_total", "Things.");
        a.inc();
        b.add(2);
        r.gauge("depth", "Queue depth.").set(7);
        r.counter_fn("read_total", "Read at scrape.", || 5);
        let mut out = String::new();
        r.render(&mut out);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n\
             # HELP depth Queue depth.\n# TYPE depth gauge\ndepth 7\n\
             # HELP read_total Read at scrape.\n# TYPE read_total counter\nread_total 5\n"
        );
        assert_eq!(r.value("x_total"), Some(3));
        assert_eq!(r.value("nothing"), None);
    }
}
