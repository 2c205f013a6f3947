pub mod traits;

pub mod mmap;
pub mod userptr;
