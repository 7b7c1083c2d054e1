package dev.pglock.core;

/** The two ways pglock keeps a lock in PostgreSQL. */
public enum LockMode {
    /** Session-level advisory locks: held by a database session until released or the session ends. */
    ADVISORY,
    /** A row in a lease table, renewed by heartbeats, that expires by the database clock. */
    LEASE
}
