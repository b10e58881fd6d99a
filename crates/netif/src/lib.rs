//! Network interface set-up shared by gvisor-cni, the installer and svcproxy: the rtnetlink
//! requests (`netlink`), the SIOC* flag ioctls (`flags`), the links' addresses (`addresses`)
//! and name-to-index lookup. The three query and change interfaces through here only.
//!
//! All three binaries must work in sandboxes without iproute2, so none shells out to `ip`.

mod addresses;
mod flags;
mod netlink;

use std::io;

pub use addresses::{addresses, Address};
pub use flags::{ipv4_address, is_up, mac_address, set_up};
pub use netlink::{Netlink, Route, RTPROT_BOOT};

/// The index of interface `name`, or `None` when there is no such interface.
pub fn index(name: &str) -> io::Result<Option<u32>> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(index) => Ok(Some(index)),
        Err(nix::errno::Errno::ENODEV | nix::errno::Errno::ENXIO) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_interface_has_no_index() {
        assert_eq!(super::index("netif-nonexist").unwrap(), None);
        assert!(super::index("lo").unwrap().is_some());
    }
}
