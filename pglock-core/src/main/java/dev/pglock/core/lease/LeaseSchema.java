package dev.pglock.core.lease;

import dev.pglock.core.internal.Sequences;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The lease table and its fencing sequence: created when missing, or checked when the user manages
 * the schema. The DDL is the file that ships in the jar, so what pglock runs and what a Flyway user
 * copies are the same text.
 */
final class LeaseSchema {

    /** Where the DDL is in the jar, for Flyway or Liquibase users. */
    static final String RESOURCE = "dev/pglock/core/lease/schema-postgresql.sql";
    /** The default names in the shipped DDL, matched as whole words in one pass. */
    private static final Pattern DEFAULT_NAMES = Pattern.compile("\\bpglock_locks(_fencing_seq)?\\b");
    // Creation is serialised across clients by a transaction-level advisory lock, so replicas
    // starting at once never race on the catalog; any fixed id does, this one spells "pglockDD".
    private static final long CREATE_LOCK_ID = 0x70676c6f636b4444L;
    private static final String CREATE_LOCK = "SELECT pg_advisory_xact_lock(?)";
    private static final String TABLE_EXISTS = "SELECT to_regclass(?) IS NOT NULL, to_regclass(?) IS NOT NULL";

    private final String table;
    private final String quotedTable;
    private final String quotedSequence;
    private final boolean initialize;

    LeaseSchema(String table, String quotedTable, String quotedSequence, boolean initialize) {
        this.table = table;
        this.quotedTable = quotedTable;
        this.quotedSequence = quotedSequence;
        this.initialize = initialize;
    }

    /** The shipped DDL with this client's (checked, quoted) names. */
    String ddl() {
        try (InputStream in = LeaseSchema.class.getClassLoader().getResourceAsStream(RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException(RESOURCE + " is missing from the pglock-core jar");
            }
            String text = new String(in.readAllBytes(), StandardCharsets.UTF_8);
            Matcher names = DEFAULT_NAMES.matcher(text);
            return names.replaceAll(match -> Matcher.quoteReplacement(match.group(1) != null ? quotedSequence : quotedTable));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Creates the objects when asked to, else checks they are there; throws with what to do. */
    Void prepare(Connection connection) throws SQLException {
        if (initialize) {
            create(connection);
        } else if (!exists(connection)) {
            throw new IllegalStateException("the lease table " + table + " or its sequence " + table
                    + "_fencing_seq does not exist and initialize-schema is never: create them with the DDL in "
                    + RESOURCE + " (in the pglock-core jar), or let pglock create them");
        }
        Sequences.requireUncached(connection, quotedSequence, table + "_fencing_seq");
        return null;
    }

    /**
     * The table's and the sequence's quoted names, schema-qualified, as the database resolves this
     * client's names (see Identifiers.qualified): two names of one table give one answer, tables of
     * one name in two schemas two. Call after {@link #prepare}.
     */
    String[] qualifiedNames(Connection connection) throws SQLException {
        return new String[] {dev.pglock.core.internal.Identifiers.qualified(connection, quotedTable),
                dev.pglock.core.internal.Identifiers.qualified(connection, quotedSequence)};
    }

    private boolean exists(Connection connection) throws SQLException {
        try (PreparedStatement ps = connection.prepareStatement(TABLE_EXISTS)) {
            ps.setString(1, quotedTable);
            ps.setString(2, quotedSequence);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getBoolean(1) && rs.getBoolean(2);
            }
        }
    }

    private void create(Connection connection) throws SQLException {
        if (exists(connection)) {
            return;
        }
        connection.setAutoCommit(false);
        try {
            try (PreparedStatement ps = connection.prepareStatement(CREATE_LOCK)) {
                ps.setLong(1, CREATE_LOCK_ID);
                ps.execute();
            }
            try (Statement st = connection.createStatement()) {
                st.execute(ddl());
            }
            connection.commit();
        } catch (SQLException | RuntimeException e) {
            connection.rollback();
            throw e;
        } finally {
            connection.setAutoCommit(true);
        }
    }
}
