//! Configuration: the JSON users write ([`raw`], or a protobuf `Struct`, [`pbstruct`]) compiled
//! once into [`settings::Settings`], which the request path only reads. This is where every
//! field is validated with an error naming it; nothing downstream re-checks configuration.

pub mod pbstruct;
pub mod raw;
pub mod settings;
