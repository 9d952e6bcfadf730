import { authorize } from '../../policy/rbac.js';
import { rewriteCommand } from '../../policy/rewrite.js';
import type { RewrittenCommand } from '../../policy/handler.js';
import type { AppManifest } from '../../apps/manifests.js';
import { allowedCollections, checkDataAccess, documentTooLarge, restrictListing, tooManyDocuments } from '../app-limits.js';
import { Rejected, policyReason, rejectedAs } from '../rejection.js';
import { commandError } from '../../policy/errors.js';
import type { Request } from '../request.js';
import type { StepContext, StepResult } from './step.js';

/**
 * Scoping: the policy layer rewrites the command for the app and RBAC checks what it touches; then
 * the manifest's data_access and document limits (src/session/app-limits.ts) on what the rewrite says
 * the command touches and writes.
 */
export function policy(req: Request, s: StepContext): StepResult | Promise<StepResult> {
  const live = req.live!;
  const app = live.manifest;
  const spec = req.spec!;
  const scope = (req.scope = s.binding.scopeFor(app.slug, app.exposeTag));
  // A standalone upstream has no retryable writes and no transactions: the proxy presents itself as a
  // standalone then (src/policy/local/answers.ts), and answers a transaction number as mongod does.
  if (req.cmd!.txnNumber !== undefined && s.ctx.upstream.topology.isStandalone()) {
    throw new Rejected('invalid_request', commandError('IllegalOperation', 'Transaction numbers are only allowed on a replica set member or mongos'));
  }
  let rewritten: RewrittenCommand;
  try {
    rewritten = rewriteCommand(scope, spec, req.name, req.cmd!, req.parsed!.sequences);
  } catch (err) {
    throw rejectedAs(policyReason(err), err);
  }
  try {
    authorize(live.roles, rewritten.access, req.name);
  } catch (err) {
    throw rejectedAs('rbac', err);
  }
  try {
    req.rewritten = manifestLimits(app, req, rewritten);
  } catch (err) {
    req.usage!.refused++;
    throw err;
  }
  if (app.limits.maxDocumentsPerCollection !== undefined && s.ctx.documentCounts && spec.name === 'insert') return admitDocuments(req, s);
  return 'next';
}

/**
 * data_access (read_only, collections), then max_document_bytes on the documents the app sent whole.
 * Returns the command, its listing narrowed when the app is restricted to some collections.
 */
function manifestLimits(app: AppManifest, req: Request, rewritten: RewrittenCommand): RewrittenCommand {
  checkDataAccess(app, rewritten.access, req.name);
  const allowed = allowedCollections(app.dataAccess);
  if (allowed && req.spec!.name === 'listCollections') rewritten = { ...rewritten, reply: restrictListing(rewritten.reply, allowed) };
  const { maxDocumentBytes } = app.limits;
  // The rewrite sized the documents as the app sent them (it has tagged them: the limit is on the app's bytes).
  const written = rewritten.written;
  if (maxDocumentBytes !== undefined && written && written.largest > maxDocumentBytes) {
    throw documentTooLarge(app, { where: written.largestAt, bytes: written.largest }, maxDocumentBytes);
  }
  return rewritten;
}

/** max_documents_per_collection for an insert (asks the document counts: the one asynchronous check). */
async function admitDocuments(req: Request, s: StepContext): Promise<StepResult> {
  const app = req.live!.manifest;
  const max = app.limits.maxDocumentsPerCollection!;
  const rewritten = req.rewritten!;
  const collection = rewritten.access[0]?.collection;
  // The documents the rewrite stamped: as many as the insert adds.
  const adding = rewritten.written?.documents ?? 0;
  if (collection === undefined || adding === 0) return 'next';
  try {
    const verdict = await s.ctx.documentCounts!.admit(req.scope!.prefix + collection, max, adding);
    if (!verdict.ok) throw tooManyDocuments(app, collection, verdict.count, adding, max);
    req.settleCount = verdict.settle;
  } catch (err) {
    req.usage!.refused++;
    throw err;
  }
  return 'next';
}
