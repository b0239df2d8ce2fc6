//! The XDP fast path: the embedded program and its maps ([`program`]), the poller that drains
//! them into the flow table ([`poller`]), and attaching to interfaces ([`attach`]).

pub mod attach;
pub mod poller;
pub mod program;

pub use self::{
    poller::{PollStats, Poller},
    program::{DrainBuffers, KernelConfig, KernelError, OBJECT, SensorProgram},
};
