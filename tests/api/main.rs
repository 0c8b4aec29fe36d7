//! The one integration-test binary (each file under tests/ would link separately; see
//! kanidm's DO_NOT_ADD_MORE_TESTS_HERE). Tests spawn the real oidc-bff on a random loopback
//! port against the real oidc-provider (tests/idp) or, for fault injection only, a wiremock IdP.

mod helpers;

mod cli;
mod cookies;
mod cors;
mod docs;
mod doctor;
mod drift;
mod events;
mod exchange;
mod fapi;
mod faults;
mod layout;
mod limits;
mod login;
mod logs;
mod ops;
mod pool;
mod props;
mod providers;
mod proxy;
mod stores;
mod streaming;
mod topologies;
mod topology;
mod traces;
mod upstream;
mod websocket;
