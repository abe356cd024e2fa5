//! tailhook tails security logs, turns the lines that match regex rules into
//! JSON events, and pushes them in batches to webhooks within each webhook's
//! body-size and rate limits.
//!
//! A line travels through the modules in this order:
//! [`config`] → [`tail`] → [`rules`] → [`queue`] → [`deliver`] (batch, limit,
//! send), wired together by [`pipeline`]. [`event`] holds the payload types
//! that cross those seams; [`cli`] is the command line on top, and
//! [`systemd`] tells a service manager when the agent is ready and alive.
//!
//! Operating the agent: [`control`] is the socket through which `status` and
//! `send` reach a running agent, [`status`] builds the status report (from the
//! agent or the state files), [`metrics`] counts and serves `/metrics`.

pub mod cli;
pub mod config;
pub mod control;
pub mod deadletter;
pub mod deliver;
pub mod event;
pub mod fleet;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod private;
pub mod queue;
pub mod rules;
pub mod status;
pub mod systemd;
pub mod tail;
pub mod tap;
