//! Workflows: the operator's jobs, built from card-client calls, with every
//! response checked and every step recorded where the job says so.

pub mod authorize;
pub mod backup;
pub mod deposit;
pub mod duplicate;
pub mod escrow;
pub mod files;
pub mod holders;
pub mod issue;
pub mod keygroup;
pub mod purse;
pub mod replace;
pub mod restore_check;
pub mod station;
pub mod storing;
pub mod wallet;
