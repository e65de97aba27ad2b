//! A hostile length header must not turn into a large allocation, even when the maximum
//! frame size allows it: memory follows the bytes that arrive.
//!
//! This test binary counts every allocation of the process with a global allocator, so it
//! holds this one test only.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use util::*;
use wiremesh_core::{DisconnectReason, Envelope, Mesh, TcpTransport};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_four_gibibyte_header_costs_only_what_arrives() {
    // The largest maximum there is: the header alone is legal.
    let transport = TcpTransport::default().with_max_frame_size(u32::MAX);
    let mesh = Mesh::new(8, 8).unwrap();
    let (client, server) = mesh_pair(&mesh, &transport);
    let (mut raw, id) = raw_peer(&mesh, &transport);
    let before = LARGEST.load(Relaxed);

    write_all(&mut raw, &[0xff, 0xff, 0xff, 0xff]);
    write_all(&mut raw, &[0x55; 100]);
    thread::sleep(Duration::from_millis(50));
    // Other connections carry on meanwhile.
    mesh.send(Envelope::new(client, b"unaffected".to_vec()))
        .unwrap();
    assert_eq!(recv(&mesh).id(), server);
    drop(raw);

    let notice = disconnect(&mesh);
    assert_eq!(notice.id, id);
    assert!(
        matches!(
            notice.reason,
            DisconnectReason::EofMidFrame { buffered: 104 }
        ),
        "{:?}",
        notice.reason
    );
    let largest = LARGEST.load(Relaxed);
    assert!(
        largest <= before.max(256 * 1024),
        "largest allocation was {largest} bytes (before the hostile header: {before})"
    );
}
