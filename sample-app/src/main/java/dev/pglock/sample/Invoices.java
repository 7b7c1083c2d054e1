package dev.pglock.sample;

import dev.pglock.spring.DistributedLock;
import dev.pglock.spring.LockContext;
import java.util.Map;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.stereotype.Service;
import org.springframework.transaction.annotation.Transactional;

/** Pays invoices. Every replica may be asked to pay the same invoice at the same moment; it is paid once. */
@Service
public class Invoices {

    private final JdbcTemplate jdbc;
    private final SampleSettings settings;

    Invoices(JdbcTemplate jdbc, SampleSettings settings) {
        this.jdbc = jdbc;
        this.settings = settings;
    }

    /**
     * Pays the invoice unless it is paid already. The lock (per invoice, from the argument) joins the
     * transaction ({@code inTransaction = true}: the data lives in the lock's own database): it ends
     * with the commit, and a lock lost before the commit rolls the payment back. The write also
     * compares the lock's fencing token with the one stored by the last payment, and refuses a stale
     * one, so even a holder that paused past its lock cannot overwrite a newer holder's work.
     *
     * @return whether this call paid it
     */
    @Transactional
    @DistributedLock(key = "'invoice:' + #invoiceId", waitAtMost = "${sample.pay-wait:5s}", inTransaction = true)
    public boolean pay(long invoiceId) {
        Map<String, Object> invoice = jdbc.queryForMap("SELECT paid_by, clock_timestamp() AS started_at"
                + " FROM sample_invoice WHERE run_id = ? AND id = ?", settings.runId(), invoiceId);
        if (invoice.get("paid_by") != null) {
            return false;
        }
        settings.pause(); // the payment provider's round trip: without the lock, another replica would pay meanwhile
        long token = LockContext.current().fencingToken();
        jdbc.update("INSERT INTO sample_payment (run_id, invoice_id, replica, started_at) VALUES (?, ?, ?, ?)",
                settings.runId(), invoiceId, settings.replica(), invoice.get("started_at"));
        int written = jdbc.update("""
                UPDATE sample_invoice SET paid_by = ?, fencing_token = ?
                WHERE run_id = ? AND id = ? AND paid_by IS NULL AND (fencing_token IS NULL OR fencing_token < ?)""",
                settings.replica(), token, settings.runId(), invoiceId, token);
        if (written == 0) { // a newer holder wrote first: our lock was lost, our work must not land
            throw new StaleLockException("invoice " + invoiceId + ": fencing token " + token
                    + " is older than the one already written; rolled back");
        }
        return true;
    }

    /** Adds invoices 1..count for this run (the demo does this once). */
    public void create(int count) {
        for (long id = 1; id <= count; id++) {
            jdbc.update("INSERT INTO sample_invoice (run_id, id, amount_cents) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    settings.runId(), id, 100 * id);
        }
    }

    /** A write refused because a newer holder of the same lock has written since (rolls the payment back). */
    static final class StaleLockException extends RuntimeException {
        StaleLockException(String message) {
            super(message);
        }
    }

}
