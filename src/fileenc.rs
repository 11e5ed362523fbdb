//! Encrypted file format (see docs/FORMATS.md).
