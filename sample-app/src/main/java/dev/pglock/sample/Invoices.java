package dev.pglock.sample;

import dev.pglock.spring.DistributedLock;
import dev.pglock.spring.LockContext;
import java.util.concurrent.ThreadLocalRandom;
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
     * Pays the invoice unless it is paid already. The lock (per invoice, from the argument) is taken
     * before the transaction begins and released after it commits, so the next replica to get it
     * sees the payment.
     *
     * @return whether this call paid it
     */
    @Transactional
    @DistributedLock(key = "'invoice:' + #invoiceId", waitAtMost = "${sample.pay-wait:5s}")
    public boolean pay(long invoiceId) {
        String paidBy = jdbc.queryForObject("SELECT paid_by FROM sample_invoice WHERE run_id = ? AND id = ?",
                String.class, settings.runId(), invoiceId);
        if (paidBy != null) {
            return false;
        }
        pause(); // the payment provider's round trip: without the lock, another replica would pay meanwhile
        long token = LockContext.current().fencingToken();
        jdbc.update("INSERT INTO sample_payment (run_id, invoice_id, replica) VALUES (?, ?, ?)", settings.runId(),
                invoiceId, settings.replica());
        jdbc.update("UPDATE sample_invoice SET paid_by = ?, fencing_token = ? WHERE run_id = ? AND id = ?",
                settings.replica(), token, settings.runId(), invoiceId);
        return true;
    }

    /** Adds invoices 1..count for this run (the demo does this once). */
    public void create(int count) {
        for (long id = 1; id <= count; id++) {
            jdbc.update("INSERT INTO sample_invoice (run_id, id, amount_cents) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    settings.runId(), id, 100 * id);
        }
    }

    static void pause() {
        try {
            Thread.sleep(ThreadLocalRandom.current().nextInt(2, 6));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
