//! Products and their stock: the `vmType` words and the stock status rule.

use std::fmt;
use std::str::FromStr;

/// Whether a product sells virtual machines (`VPS`) or containers (`LXC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmType {
    Vps,
    Lxc,
}

impl VmType {
    /// The enum word of `vmType`.
    pub fn as_str(self) -> &'static str {
        match self {
            VmType::Vps => "VPS",
            VmType::Lxc => "LXC",
        }
    }

    /// Parses the `type` filter of the stock list: `vps`, or `linux` for
    /// containers. `lxc` is accepted as well, since the OS catalogue of real
    /// ADVPS clients names containers that way.
    pub fn from_filter(value: &str) -> Option<VmType> {
        match value {
            "vps" => Some(VmType::Vps),
            "linux" | "lxc" => Some(VmType::Lxc),
            _ => None,
        }
    }
}

impl fmt::Display for VmType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VmType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vps" => Ok(VmType::Vps),
            "lxc" | "linux" => Ok(VmType::Lxc),
            _ => Err(format!("unknown product type '{s}': expected vps or lxc")),
        }
    }
}

/// The default upper bound of `LOW_STOCK`.
pub const DEFAULT_LOW_STOCK_THRESHOLD: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockStatus {
    InStock,
    LowStock,
    OutOfStock,
}

impl StockStatus {
    /// `OUT_OF_STOCK` at 0 (or less), `LOW_STOCK` from 1 to the threshold,
    /// `IN_STOCK` above it; so `stock > 0` exactly when not out of stock.
    pub fn classify(stock: i64, low_stock_threshold: i64) -> StockStatus {
        if stock <= 0 {
            StockStatus::OutOfStock
        } else if stock <= low_stock_threshold {
            StockStatus::LowStock
        } else {
            StockStatus::InStock
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StockStatus::InStock => "IN_STOCK",
            StockStatus::LowStock => "LOW_STOCK",
            StockStatus::OutOfStock => "OUT_OF_STOCK",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_status_boundaries() {
        assert_eq!(StockStatus::classify(0, 5), StockStatus::OutOfStock);
        assert_eq!(StockStatus::classify(-3, 5), StockStatus::OutOfStock);
        assert_eq!(StockStatus::classify(1, 5), StockStatus::LowStock);
        assert_eq!(StockStatus::classify(5, 5), StockStatus::LowStock);
        assert_eq!(StockStatus::classify(6, 5), StockStatus::InStock);
        assert_eq!(StockStatus::classify(1, 0), StockStatus::InStock);
    }

    #[test]
    fn type_filter_words() {
        assert_eq!(VmType::from_filter("linux"), Some(VmType::Lxc));
        assert_eq!(VmType::from_filter("lxc"), Some(VmType::Lxc));
        assert_eq!(VmType::from_filter("vps"), Some(VmType::Vps));
        assert_eq!(VmType::from_filter("VPS"), None);
        assert_eq!(VmType::from_filter(""), None);
    }
}
