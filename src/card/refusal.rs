//! Why the card refused a command, when the status word says something the
//! holder or operator can act on. Each variant keeps the card's status word
//! meaning for that command (docs/PROTOCOL.md).

/// A card refusal with a known meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// WRITE KEY ELEMENT `6985`.
    #[error(
        "key group element {0} is already written with a different value \
         (elements are write-once: give the elements the card was given, e.g. from the batch's \
         --elements-out file; `keygroup reset` starts over but destroys the card's main keys)"
    )]
    ElementAlreadyWritten(u8),
    /// GENERATE KEY PAIR `6985`.
    #[error(
        "the card will not generate a key pair: it must be an issued main card with a complete key \
         group and no key yet (`keygroup reset` replaces a key, and destroys the old one and every \
         duplicate's use of it)"
    )]
    KeyGenerationNotAllowed,
    /// TAKE OUT KEY `6985`.
    #[error(
        "the card refused the take-out: backup cards and imported keys never export, and a main card \
         makes one duplicate only (to the card its first take-out named)"
    )]
    TakeOutNotAllowed,
    /// TAKE OUT KEY `6984`.
    #[error(
        "the card refused the take-out target: its certificate chain does not verify under the issuer \
         root installed on the main card, or it does not certify a backup card's key agreement key"
    )]
    TakeOutTargetNotCertified,
    /// TAKE OUT KEY `6A88`.
    #[error("the card holds no main key to take out")]
    NoMainKey,
    /// IMPORT KEY `6984`.
    #[error(
        "import refused: the backup card's key group differs from the main card's (check values differ); \
         nothing was stored"
    )]
    KeyGroupMismatch,
    /// IMPORT KEY `6A80`.
    #[error("import refused: the take-out is not for this card, or it was altered; nothing was stored")]
    TakeOutNotForThisCard,
    /// IMPORT KEY `6985`.
    #[error(
        "import refused: the card is not an issued backup card with a complete key group, or already \
         holds a different key"
    )]
    ImportNotAllowed,
    /// UNWRAP FILE KEY `6A80`.
    #[error("the card could not open the file key: the file is encrypted to another key, or altered")]
    FileKeyNotOpened,
    /// UNWRAP FILE KEY `6A88`.
    #[error("the card holds no decryption key")]
    NoDecryptionKey,
    /// SET MAIN KEY `6985`.
    #[error(
        "the card refused the key: it must be a main card without a key (`keygroup reset` clears one, \
         destroying it)"
    )]
    MainKeyNotAccepted,
    /// `6982` to a command that needs the holder PIN.
    #[error("{0}: verify the PIN first")]
    PinRequired(&'static str),
    /// RESTORE / RESTORE DATA `6A80`.
    #[error(
        "{0} refused: the backup does not authenticate for this card (altered, reordered, truncated, \
         from another backup or meant for another card); nothing was written"
    )]
    BackupNotAuthentic(&'static str),
    /// RESTORE / RESTORE DATA `6985`.
    #[error(
        "{0} refused: the backup is older than one this card has already made or restored (rollback), \
         or the card is busy; nothing was written"
    )]
    Rollback(&'static str),
    /// LOAD DOMAIN KEY `6982`.
    #[error("LOAD DOMAIN KEY refused: the domain key is loaded only in the issuer's SCP11a session")]
    DomainKeyNeedsIssuerSession,
    /// LOAD DOMAIN KEY `6985`.
    #[error("LOAD DOMAIN KEY refused: the card is already issued, or already holds another domain key")]
    DomainKeyNotAccepted,
    /// LOAD DOMAIN KEY `6A80`.
    #[error("LOAD DOMAIN KEY refused: the key does not match its check value")]
    DomainKeyRejected,
    /// RESTORE `6A88`.
    #[error(
        "{0} refused: the backup belongs to another issuer domain or generation than this card; nothing was written"
    )]
    OtherDomain(&'static str),
    /// PUT DATA `BF21` `6982` / `6A80`.
    #[error(
        "the card refused the registration certificate ({0:04X}): it does not chain to the issuer root \
         installed on the card, or does not certify the card's new key for its number and role; \
         the card keeps its old certificate"
    )]
    RegistrationCertificateRefused(u16),
    /// PUT DATA `DF35` `6982` / `6A80`.
    #[error(
        "the card refused its signing key certificate ({0:04X}): it does not chain to the issuer root \
         installed on the card, or does not certify the card's new signing key for its number and role"
    )]
    SigningCertificateRefused(u16),
    /// RELEASE DUPLICATE `6985`.
    #[error(
        "release refused: a take-out has left the card, so the bound backup card's signed receipt that \
         it destroyed the key is needed (or rotate the main key); nothing changed"
    )]
    DestroyReceiptNeeded,
    /// RELEASE DUPLICATE `6984`.
    #[error(
        "release refused: the receipt's signing certificate does not chain to the issuer root installed \
         on the main card; nothing changed"
    )]
    DestroyReceiptNotCertified,
    /// RELEASE DUPLICATE `6A80`.
    #[error(
        "release refused: the receipt is not the bound backup card's signature over this card's latest \
         take-out (another card, another take-out, or altered); nothing changed"
    )]
    DestroyReceiptRejected,
    /// RESTORE `6982`.
    #[error("{0} refused: missing or invalid authorization (or PIN); nothing was written")]
    RestoreNotAuthorized(&'static str),
    /// LOAD ITEM `6982`.
    #[error(
        "LOAD ITEM refused: the load is not signed by a signer under the card's issuer root for this card, \
         this item and the card's outstanding challenge (a challenge is used once); nothing was stored"
    )]
    ItemLoadNotAuthorized,
    /// LOAD ITEM `6A80`.
    #[error(
        "LOAD ITEM refused: the wallet already holds an item with this id, or the item's issuer is not \
         the signer's name; nothing was stored"
    )]
    ItemRejected,
    /// LOAD ITEM `6A84`.
    #[error("the wallet is full: every one of its {0} item slots is taken; nothing was stored")]
    WalletFull(u8),
    /// SPEND `6A88`.
    #[error("the wallet holds no item {0}")]
    NoSuchItem(String),
    /// SPEND `6985`.
    #[error("item {0} is pending a deposit and cannot be spent until the deposit completes or is resolved")]
    ItemPending(String),
    /// Terminal-side before SPEND (the card has no clock): the terminal's
    /// date is outside the item's validity.
    #[error("item {0} is valid {1}; today ({2}, this terminal's clock) is outside it: nothing was spent")]
    ItemOutsideValidity(String, String, String),
    /// SPEND `6A80`.
    #[error("item {0} has a remaining balance of {1}: that amount cannot be spent (nor 0)")]
    SpendTooMuch(String, u32),
    /// DEPOSIT `6985` (P1 = 00).
    #[error(
        "the card will not deposit item {0}: it is pending a deposit into another safe (settle it with \
         `wallet resolve --safe` of that safe), or the card has no signing key"
    )]
    DepositNotStarted(String),
    /// DEPOSIT `6982` (P1 = 01).
    #[error(
        "the card refused the safe's registration certificate: it is not signed by a safe certified \
         under the card's issuer root; the item stays pending (`wallet resolve`)"
    )]
    SafeCertificateRefused,
    /// DEPOSIT `6A80` (P1 = 01).
    #[error(
        "the card refused the registration certificate: it names another card, or does not match the \
         deposited item (summary or stored hash); the item stays pending"
    )]
    SafeCertificateMismatch,
    /// DEPOSIT `6A84` (P1 = 01).
    #[error("the card's store of registration certificates is full; the item stays pending")]
    CertificateStoreFull,
    /// WITHDRAW `6982`.
    #[error(
        "the card refused the delivery: not signed by a safe under its issuer root, not for its \
         outstanding withdraw challenge, or (onto another card) without a valid issuer authorization \
         naming it; nothing was added"
    )]
    DeliveryNotAuthorized,
    /// WITHDRAW `6A80`.
    #[error(
        "the card refused the delivery: it is for another card, or does not open with this card's keys \
         (the item was deposited by another card of another domain, or altered); nothing was added"
    )]
    DeliveryRejected,
    /// WITHDRAW `6985`.
    #[error("the card already took this deposited item in another delivery (a replay); nothing was added")]
    DeliveryReplayed,
    /// ESCROW `6982` (P1 = 01).
    #[error(
        "the card could not open the escrowed parts: the owner password is not the one the wallet key \
         was escrowed under; nothing changed"
    )]
    EscrowPasswordWrong,
    /// ESCROW `6A80` (P1 = 01).
    #[error(
        "the card refused the escrowed parts: they are not all the parts of one wallet key (a key split \
         across two safes needs both), or they do not rebuild it; nothing changed"
    )]
    EscrowIncomplete,
}
