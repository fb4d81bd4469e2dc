//! What the integration tests share, as a library of its own (each test binary uses a part).

pub mod app;
pub mod backend;
pub mod bus;
pub mod load;
pub mod proxy;
pub mod receiver;
