//! Newtypes for OAuth secrets: they cannot be printed, logged or serialized by accident.

use std::fmt;

macro_rules! secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The raw secret, for the one place that must send or store it.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret!(
    /// A short-lived bearer for the ChatGPT backend.
    AccessToken
);
secret!(
    /// A rotating refresh token: using an old one revokes the whole family upstream.
    RefreshToken
);
secret!(
    /// The OIDC id_token; it only carries claims, but it is still a credential.
    IdToken
);
secret!(
    /// The bearer clients must present when `CODEX_PROXY_TOKEN` is set.
    ClientToken
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let token = RefreshToken::new("rt_super_secret");
        assert_eq!(format!("{token:?}"), "RefreshToken(<redacted>)");
        assert!(!format!("{:?}", Some(token)).contains("super_secret"));
    }
}
