//! Everything that talks to the XDP program and its maps: the embedded program and its maps
//! ([`program`]), attaching to interfaces ([`attach`]), the poller that drains the flow maps
//! into the flow table ([`poller`]), and the evidence watch map and ring ([`watch`]); the
//! blocklist and rate limits are written through [`program`] by `mitigate`.

pub mod attach;
mod batch;
pub mod poller;
pub mod program;
pub mod watch;

pub use self::{
    batch::DrainBuffers,
    poller::{PollStats, Poller},
    program::{KernelConfig, KernelError, OBJECT, SensorProgram},
};
