//! The anomaly models: flow features, the Isolation Forest, and the versioned model file that
//! holds a trained forest with its scaler and threshold; and the online second model
//! (AfterImage statistics of flow events, a KitNET autoencoder ensemble).

pub mod afterimage;
pub mod features;
pub mod iforest;
pub mod kitnet;
pub mod model;
pub mod online;
