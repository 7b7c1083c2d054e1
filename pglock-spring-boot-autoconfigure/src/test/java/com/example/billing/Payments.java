package com.example.billing;

import dev.pglock.spring.DistributedLock;
import dev.pglock.spring.LockContext;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.stereotype.Service;
import org.springframework.transaction.annotation.Transactional;

@Service
public class Payments {

    private final JdbcTemplate jdbc;

    public Payments(JdbcTemplate jdbc) {
        this.jdbc = jdbc;
    }

    // One payment per invoice, whichever replica is asked. The lock joins the transaction
    // (inTransaction = true): it ends with the commit, and a lock lost before the commit rolls the
    // payment back. The fencing token makes the write itself refuse a holder that is no longer current.
    @Transactional
    @DistributedLock(key = "'invoice:' + #invoiceId", waitAtMost = "5s", inTransaction = true)
    public boolean pay(long invoiceId) {
        long token = LockContext.current().fencingToken();   // advisory mode: pglock.advisory.fencing-tokens=true
        int paid = jdbc.update("""
                UPDATE invoice SET paid = true, fencing_token = ?
                WHERE id = ? AND NOT paid AND fencing_token < ?""", token, invoiceId, token);
        return paid == 1;   // false: already paid (or a newer holder has written)
    }
}
