//! What runs the pipeline: a replay of capture files ([`replay`]) and the live loop over the
//! attached sources ([`live`]). Each owns a flow table and drives one `Pipeline` with it.

pub mod live;
pub mod replay;
