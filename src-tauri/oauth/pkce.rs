//! PKCE (S256) and the `state` value of the browser login.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// A verifier kept here and the challenge that goes into the authorize URL.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    /// 64 random bytes as the verifier (86 characters), like Codex.
    pub fn generate() -> Result<Pkce, getrandom::Error> {
        let verifier = random_token(64)?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Ok(Pkce {
            verifier,
            challenge,
        })
    }
}

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> Result<String, getrandom::Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_is_the_s256_of_the_verifier() {
        let p = Pkce::generate().unwrap();
        assert_eq!(p.verifier.len(), 86);
        assert_eq!(
            p.challenge,
            URL_SAFE_NO_PAD.encode(Sha256::digest(p.verifier.as_bytes()))
        );
        assert_ne!(random_token(32).unwrap(), random_token(32).unwrap());
    }
}
