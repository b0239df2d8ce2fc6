//! The BGP speaker's own thread: carries out announcements and withdrawals, keeps the
//! speaker's RIB holding what the sensor wants (a restarted daemon gets its routes back) and
//! watches the sessions. The live loop never waits on it: it sends intents and reads reports
//! at each poll.

use std::{
    collections::BTreeMap,
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::bgp::{FlowAction, Peer, Route, Speaker};

/// What the policy asks of the speaker.
#[derive(Clone, Debug)]
pub enum Intent {
    Announce(Route, FlowAction),
    Withdraw(Route),
}

/// What the speaker did, or saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// An intent carried out (`Err`: the speaker refused it or could not be reached).
    Announced(Route, Result<(), String>),
    Withdrawn(Route, Result<(), String>),
    /// A route the sensor wants was missing from the speaker's RIB (the daemon restarted)
    /// and was put back.
    Restored(Route, Result<(), String>),
    /// A route of the sensor's kind found in the speaker at start, inside the protected
    /// networks, that nothing wants: left by a run that stopped without withdrawing. Withdrawn.
    Stale(Route, Result<(), String>),
    /// The neighbours and their state (`Err`: the speaker could not be asked), when changed.
    Peers(Result<Vec<Peer>, String>),
}

/// The handle the policy holds.
pub struct SpeakerThread {
    tx: Option<Sender<Intent>>,
    rx: Receiver<Report>,
    handle: Option<JoinHandle<()>>,
}

impl SpeakerThread {
    /// Starts the thread. `ours` says which routes found in the speaker at start are the
    /// sensor's to clean up (a victim inside the protected networks).
    pub fn start(
        speaker: Box<dyn Speaker>,
        check_every: Duration,
        ours: impl Fn(&Route) -> bool + Send + 'static,
    ) -> Self {
        let (tx, intents) = mpsc::channel();
        let (reports, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("bgp-speaker".into())
            .spawn(move || Worker::new(speaker, reports).run(&intents, check_every, &ours))
            .ok();
        if handle.is_none() {
            tracing::error!("could not start the BGP speaker's thread: nothing will be announced");
        }
        Self {
            tx: Some(tx),
            rx,
            handle,
        }
    }

    pub fn send(&self, i: Intent) {
        if let Some(tx) = &self.tx {
            let _ignored = tx.send(i);
        }
    }

    pub fn reports(&self) -> Vec<Report> {
        self.rx.try_iter().collect()
    }

    /// Lets the thread carry out what was sent, then ends it; its last reports.
    pub fn stop(&mut self) -> Vec<Report> {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ignored = h.join();
        }
        self.reports()
    }
}

impl Drop for SpeakerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Worker {
    speaker: Box<dyn Speaker>,
    reports: Sender<Report>,
    /// What the speaker should hold.
    wanted: BTreeMap<Route, FlowAction>,
    peers: Option<Result<Vec<Peer>, String>>,
}

/// An error with its causes, as the audit row and the API show it.
fn text(r: Result<(), super::bgp::BgpError>) -> Result<(), String> {
    r.map_err(|e| crate::report::Report(&e).to_string())
}

impl Worker {
    fn new(speaker: Box<dyn Speaker>, reports: Sender<Report>) -> Self {
        Self {
            speaker,
            reports,
            wanted: BTreeMap::new(),
            peers: None,
        }
    }

    fn report(&self, r: Report) {
        let _ignored = self.reports.send(r);
    }

    fn run(mut self, intents: &Receiver<Intent>, every: Duration, ours: &dyn Fn(&Route) -> bool) {
        self.clean_up(ours);
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                self.check();
                next = Instant::now() + every;
            }
            match intents.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(i) => self.apply(i),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn apply(&mut self, i: Intent) {
        match i {
            Intent::Announce(r, action) => {
                let res = text(self.speaker.announce(&r, action));
                self.wanted.insert(r.clone(), action);
                self.report(Report::Announced(r, res));
            }
            Intent::Withdraw(r) => {
                self.wanted.remove(&r);
                let res = text(self.speaker.withdraw(&r));
                self.report(Report::Withdrawn(r, res));
            }
        }
    }

    /// At start: routes of the sensor's kind inside the protected networks that a previous
    /// run left behind (it stopped without withdrawing) come out.
    fn clean_up(&mut self, ours: &dyn Fn(&Route) -> bool) {
        let Ok(found) = self.speaker.routes() else {
            return; // unreachable now: `check` reports it
        };
        for r in found.into_iter().filter(|r| ours(r)) {
            let res = text(self.speaker.withdraw(&r));
            self.report(Report::Stale(r, res));
        }
    }

    /// Sessions, and the RIB against what is wanted.
    fn check(&mut self) {
        let peers = self
            .speaker
            .peers()
            .map_err(|e| crate::report::Report(&e).to_string());
        if self.peers.as_ref() != Some(&peers) {
            self.peers = Some(peers.clone());
            self.report(Report::Peers(peers.clone()));
        }
        if self.wanted.is_empty() || peers.is_err() {
            return;
        }
        let Ok(held) = self.speaker.routes() else {
            return;
        };
        let missing: Vec<(Route, FlowAction)> = self
            .wanted
            .iter()
            .filter(|(r, _)| !held.contains(r))
            .map(|(r, a)| (r.clone(), *a))
            .collect();
        for (r, a) in missing {
            let res = text(self.speaker.announce(&r, a));
            self.report(Report::Restored(r, res));
        }
    }
}
