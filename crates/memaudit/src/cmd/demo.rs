//! placeholder
use anyhow::Result;
use crate::Ctx;
use crate::output::Report;
#[derive(clap::Args, Debug)]
pub struct Args {}
pub fn run(_a: &Args, _c: &Ctx) -> Result<Report> { Err(crate::error::user("demo: not yet")) }
