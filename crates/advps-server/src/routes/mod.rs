//! The API's routes, one module per resource.

pub mod health;
pub mod products;
pub mod services;
pub mod tasks;
