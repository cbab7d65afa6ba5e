//! The API's routes, one module per resource.

pub mod health;
pub mod os;
pub mod products;
pub mod purchase;
pub mod services;
pub mod tasks;
