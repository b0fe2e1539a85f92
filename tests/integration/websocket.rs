//! WebSocket on `/v1/responses` (protocol §5.4): upgrades, frames, failover before the first
//! output, and the 426 that sends Codex back to HTTP when WebSocket is turned off.
