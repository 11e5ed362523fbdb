//! The cardvault card: the applet, its ISO 7816-4 layer, persistent state and
//! the vpcd client that puts it behind pcscd.
//!
//! Layers, outermost first: [`vpcd`] framing → [`iso`] dispatch (SELECT,
//! chaining, GET RESPONSE) → [`applet`] commands → [`state`] persistence.
//! The same [`Card`] runs in-process as the terminal's embedded reader.

pub mod applet;
pub mod backup;
mod domain;
pub mod factory;
pub mod iso;
pub mod keygroup;
pub mod profile;
pub mod secure;
pub mod state;
pub mod storing;
pub mod test_issuer;
pub mod test_registrars;
pub mod vpcd;
pub mod wallet;

pub use iso::Card;
pub use profile::Profile;
pub use state::{CardState, StoreError};
