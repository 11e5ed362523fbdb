//! cardvault: the terminal side.
//!
//! Layers, from the wire up: [`transport`] (PC/SC readers and the embedded
//! simulator) → [`apdu`] (encoding, GET RESPONSE, chaining, status words) →
//! [`card`] (one method per card command) → [`cli`]. [`reader`] picks the
//! reader the user named; [`config`] and [`secret`] supply settings and PINs.

pub mod apdu;
pub mod card;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod fileenc;
pub mod issuer;
pub mod reader;
pub mod registrar;
pub mod safe;
pub mod secret;
pub mod signer;
pub mod transport;
pub mod trust;
pub mod util;
pub mod vault;
pub mod workflow;

pub use error::{Error, Result};
