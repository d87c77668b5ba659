//! Policy: which rule covers a request and what a token must grant there ([`rules`]), the
//! accepted audiences ([`audience`]), and the decision with the HTTP answer a refusal gets
//! ([`decision`]). It judges a principal that [`crate::token`] produced; it never sees a
//! signature.

pub mod audience;
pub mod decision;
pub mod rules;
