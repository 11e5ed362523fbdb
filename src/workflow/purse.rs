//! The value application (e-money purse): balance, credit and debit under
//! the holder PIN. Restored value is reset by the card (FIG. 20).

use crate::card::CardClient;
use crate::error::Result;

/// The balance of value application `app`.
pub fn balance(card: &mut CardClient<'_>, app: u8) -> Result<u32> {
    card.balance(app)
}

/// Verify the PIN, then credit `amount`; returns the new balance.
pub fn credit(card: &mut CardClient<'_>, pin: &[u8], app: u8, amount: u32) -> Result<u32> {
    card.verify_pin(pin)?;
    card.credit(app, amount)
}

/// Verify the PIN, then debit `amount`; returns the new balance.
pub fn debit(card: &mut CardClient<'_>, pin: &[u8], app: u8, amount: u32) -> Result<u32> {
    card.verify_pin(pin)?;
    card.debit(app, amount)
}
