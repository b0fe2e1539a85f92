//! OAuth with OpenAI's issuer: token refresh and the claims inside ChatGPT's JWTs.
//! (The browser and device-code logins arrive with the accounts work.)

pub mod claims;
pub mod refresh;

pub use claims::TokenClaims;
pub use refresh::{refresh, RefreshError, RefreshedTokens, CLIENT_ID};
