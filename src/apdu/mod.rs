//! The APDU layer: command encoding, status words, and the channel that
//! handles GET RESPONSE, `6Cxx`, extended length and command chaining.

mod channel;
mod command;
mod status;

pub use channel::{
    data_range, format_command, raw_is_secret, Channel, Response, Stats, MAX_GET_RESPONSE_ROUNDS, MAX_RESPONSE,
};
pub use command::{Command, NE_MAX};
pub use status::StatusWord;
