package dev.pglock.core;

import java.sql.SQLException;

/**
 * The database could not answer: a connection could not be had in time, a statement failed, the
 * server went away. Keeps the SQLState of the underlying {@link SQLException} when there is one.
 */
public class LockDatabaseException extends PgLockException {

    private final String sqlState;

    public LockDatabaseException(String message, Throwable cause) {
        super(message, cause);
        this.sqlState = cause instanceof SQLException sql ? sql.getSQLState() : null;
    }

    /** The SQLState PostgreSQL or the driver reported, or null when the failure had none. */
    public String sqlState() {
        return sqlState;
    }
}
