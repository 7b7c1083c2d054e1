/**
 * Machinery shared by the two lock modes: the in-JVM lock table (re-entry and exclusion between
 * threads that share database sessions), the {@code HeldLock} implementation, lost-lock reporting
 * and JDBC helpers. Public only so that {@code core.advisory} and {@code core.lease} can use it:
 * not an API, it may change in any release.
 */
package dev.pglock.core.internal;
