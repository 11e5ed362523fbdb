//! Which card issuers the terminal trusts: the issuer root certificates a
//! card's certificate chain must lead to before the terminal opens a secure
//! channel and sends it a PIN or a secret (docs/FORMATS.md, "Trust
//! configuration").
//!
//! Roots come from `--trust ROOT.pem` (repeatable), else `CARDVAULT_TRUST` (a
//! path list), else `trust = [...]` in config.toml. Embedded `sim:` cards also
//! trust the built-in test issuer root without being told (the reader says
//! so, see [`crate::transport::Reader::built_in_root`]); PC/SC cards trust only
//! what was configured.

use crate::error::{Error, Result};
use openssl::x509::X509;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A set of trusted issuer roots. Cheap to clone.
#[derive(Clone, Default)]
pub struct Trust {
    roots: Arc<Vec<X509>>,
    /// Where the roots came from, for messages.
    sources: Arc<Vec<String>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("sources", &self.sources).finish()
    }
}

impl Trust {
    /// No trusted issuer.
    pub fn none() -> Trust {
        Trust::default()
    }

    /// The roots in PEM files (each file may hold several certificates).
    pub fn from_files(paths: &[PathBuf]) -> Result<Trust> {
        let mut t = Trust::default();
        for p in paths {
            let pem = std::fs::read(p).map_err(|e| Error::Usage(format!("trusted root {}: {e}", p.display())))?;
            t = t.with_pem(&pem, &p.display().to_string())?;
        }
        Ok(t)
    }

    /// This set plus the certificates of one PEM document.
    pub fn with_pem(&self, pem: &[u8], source: &str) -> Result<Trust> {
        let certs = X509::stack_from_pem(pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::Usage(format!("trusted root {source}: no PEM certificate in it")))?;
        let mut roots = (*self.roots).clone();
        roots.extend(certs);
        let mut sources = (*self.sources).clone();
        sources.push(source.to_string());
        Ok(Trust {
            roots: Arc::new(roots),
            sources: Arc::new(sources),
        })
    }

    /// The trusted root certificates.
    pub fn roots(&self) -> &[X509] {
        &self.roots
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Where the roots came from (file names, "built-in test issuer").
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

/// The trust files to load: `--trust` values if any, else `CARDVAULT_TRUST`
/// (a path list, `:`-separated on Unix), else the configuration's `trust`
/// (relative paths resolved against the configuration file's directory).
pub fn configured_paths(
    flags: &[PathBuf],
    env: Option<std::ffi::OsString>,
    config: &[PathBuf],
    config_path: Option<&Path>,
) -> Vec<PathBuf> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        return std::env::split_paths(&v)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let base = config_path.and_then(Path::parent);
    config
        .iter()
        .map(|p| match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_env_and_config() {
        let flags = vec![PathBuf::from("a.pem")];
        let config = vec![PathBuf::from("c.pem")];
        let env = Some(std::ffi::OsString::from("x.pem:y.pem"));
        assert_eq!(configured_paths(&flags, env.clone(), &config, None), flags);
        assert_eq!(
            configured_paths(&[], env, &config, None),
            vec![PathBuf::from("x.pem"), PathBuf::from("y.pem")]
        );
        assert_eq!(
            configured_paths(&[], None, &config, Some(Path::new("/etc/cv/config.toml"))),
            vec![PathBuf::from("/etc/cv/c.pem")]
        );
    }

    #[test]
    fn pem_without_certificate_is_refused() {
        assert!(Trust::none().with_pem(b"nothing", "x").is_err());
        let root = include_bytes!("../fixtures/issuer/test-root.pem");
        let t = Trust::none().with_pem(root, "test").unwrap();
        assert_eq!(t.roots().len(), 1);
    }
}
