//! One integration-test binary for the router: fakes of the ChatGPT backend and the OAuth
//! issuer live in `support/`, each test module exercises one behaviour family.

mod support;

mod fakes;
