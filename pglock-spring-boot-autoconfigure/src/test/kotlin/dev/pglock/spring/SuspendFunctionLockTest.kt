package dev.pglock.spring

import dev.pglock.core.LockRequest
import dev.pglock.core.PgLock
import dev.pglock.spring.boot.autoconfigure.PgLockAutoConfiguration
import dev.pglock.test.PgTestDatabase
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.assertj.core.api.Assertions.assertThat
import org.junit.jupiter.api.Test
import org.springframework.boot.autoconfigure.AutoConfigurations
import org.springframework.boot.autoconfigure.aop.AopAutoConfiguration
import org.springframework.boot.jdbc.autoconfigure.DataSourceAutoConfiguration
import org.springframework.boot.test.context.runner.ApplicationContextRunner

/**
 * Issue 14, point 1: a Kotlin suspend function returns (suspends) before its work is done; before,
 * its lock was released at that moment. Now it is held until the function completes.
 */
class SuspendFunctionLockTest {

    open class SuspendJobs {
        @DistributedLock(key = "'suspend'")
        open suspend fun work(entered: CompletableDeferred<Unit>, gate: CompletableDeferred<String>): String {
            entered.complete(Unit)
            val answer = gate.await()
            // LockContext.current() is not set in a suspend function; its lock is in the Reactor context.
            val lock = kotlin.coroutines.coroutineContext[kotlinx.coroutines.reactor.ReactorContext]?.context
                ?.getOrDefault<dev.pglock.core.HeldLock>(LockContext.REACTOR_KEY, null)
            return answer + ":" + lock?.key()
        }

        /** Says, for each item, whether another client could take the key while it was emitted. */
        @DistributedLock(key = "'suspend-flow'")
        open suspend fun items(other: dev.pglock.core.LockClient): Flow<String> = flow {
            for (i in 1..3) {
                emit("$i:" + (if (other.tryAcquire(LockRequest.of("suspend-flow")).isPresent) "free" else "held"))
            }
        }
    }

    /**
     * A suspend function that returns a Flow: Spring AOP hands the interceptor a Flux for it, and it
     * was taken as one value (the Java return type is Object), so the caller got the first item only
     * and the lock was released then. Every item now comes, each emitted under the lock.
     */
    @Test
    fun aSuspendFunctionReturningAFlowGivesEveryItemUnderTheLock() {
        withJobsAndAnotherReplica { jobs, other ->
            val items = runBlocking { withTimeout(10_000) { jobs.items(other).toList() } }
            assertThat(items).containsExactly("1:held", "2:held", "3:held")
            assertThat(other.tryAcquire(LockRequest.of("suspend-flow"))).`as`("released once it completed")
                .isPresent()
        }
    }

    @Test
    fun aSuspendFunctionHoldsItsLockUntilItCompletes() {
        withJobsAndAnotherReplica { jobs, other ->
            runBlocking {
                val entered = CompletableDeferred<Unit>()
                val gate = CompletableDeferred<String>()
                val call = async(Dispatchers.IO) { jobs.work(entered, gate) }
                withTimeout(10_000) { entered.await() } // the body runs, and now suspends
                assertThat(other.tryAcquire(LockRequest.of("suspend"))).`as`("held while suspended").isEmpty()
                gate.complete("done")
                assertThat(withTimeout(10_000) { call.await() }).isEqualTo("done:suspend")
            }
            assertThat(other.tryAcquire(LockRequest.of("suspend"))).`as`("released once it completed")
                .isPresent()
        }
    }

    open class SuspendFlux {
        @DistributedLock(key = "'suspend-flux'")
        open suspend fun items(): reactor.core.publisher.Flux<String> = reactor.core.publisher.Flux.just("a", "b")
    }

    /**
     * Review: a suspend function that returns a Flux (or another publisher) stops the start, naming
     * it. Before, Spring handed the interceptor its items as a Flux, pglock took the first as the
     * answer and released the lock, and the caller got that item where it expected a Flux.
     */
    @Test
    fun aSuspendFunctionReturningAFluxStopsTheStart() {
        assertThat(startFailure(SuspendFlux::class.java)).contains("SuspendFlux.items")
            .contains("reactor.core.publisher.Flux").contains("Flow")
    }

    open class SuspendEmitter {
        @DistributedLock(key = "'suspend-emitter'")
        open suspend fun events(): org.springframework.web.servlet.mvc.method.annotation.SseEmitter =
            org.springframework.web.servlet.mvc.method.annotation.SseEmitter()
    }

    /**
     * Review: a suspend function whose value is work that runs later (an emitter MVC streams) stops the
     * start, as a Mono of one does. Before, its lock ended when the value was ready, before the streaming.
     */
    @Test
    fun aSuspendFunctionReturningAnEmitterStopsTheStart() {
        assertThat(startFailure(SuspendEmitter::class.java)).contains("SuspendEmitter.events")
            .contains("SseEmitter, whose work runs")
    }

    /** The messages of the failure (and its causes) that stopped a context with [bean] from starting. */
    private fun startFailure(bean: Class<*>): String {
        val db = PgTestDatabase.get()
        var messages = ""
        ApplicationContextRunner()
            .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration::class.java,
                AopAutoConfiguration::class.java, PgLockAutoConfiguration::class.java))
            .withPropertyValues("spring.datasource.url=" + db.jdbcUrl(), "spring.datasource.username=" + db.user(),
                "spring.datasource.password=" + db.password(), "pglock.namespace=" + PgTestDatabase.uniqueName("start"))
            .withBean(bean)
            .run { context ->
                assertThat(context.startupFailure).isNotNull()
                var failure: Throwable? = context.startupFailure
                while (failure != null) {
                    messages += failure.message + "\n"
                    failure = failure.cause
                }
            }
        return messages
    }

    /** Runs [test] with the locked beans of a context and another replica's client on the same namespace. */
    private fun withJobsAndAnotherReplica(test: (SuspendJobs, dev.pglock.core.LockClient) -> Unit) {
        val db = PgTestDatabase.get()
        val namespace = PgTestDatabase.uniqueName("suspend")
        ApplicationContextRunner()
            .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration::class.java,
                AopAutoConfiguration::class.java, PgLockAutoConfiguration::class.java))
            .withPropertyValues("spring.datasource.url=" + db.jdbcUrl(), "spring.datasource.username=" + db.user(),
                "spring.datasource.password=" + db.password(), "pglock.namespace=" + namespace)
            .withBean(SuspendJobs::class.java)
            .run { context ->
                db.pooledDataSource(2).use { pool ->
                    PgLock.advisory(pool).namespace(namespace).build().use { other ->
                        test(context.getBean(SuspendJobs::class.java), other)
                    }
                }
            }
    }
}
