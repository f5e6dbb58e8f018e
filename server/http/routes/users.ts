/**
 * Accounts over REST: an operator changes their own password; an admin (root on the control socket, or an
 * account with role admin) lists and removes accounts. Creating accounts stays with root on the machine
 * (`dispatcherd user add`); nothing else in the API can create, change or remove an account — the node API
 * in particular never touches accounts (docs/SECURITY.md, "Identities"). Every change is audited, never the secret.
 */
import { z } from 'zod';
import { DispatcherError } from '../../../api/errors.js';
import { changePassword, listUsers, readUsersFile, removeUser, userNameProblems, verifyPassword } from '../../users.js';
import { authUser } from '../auth.js';
import { validate, type RouteModule } from '../app.js';
import { commonErrors, problemResponse } from '../openapi.js';

const PasswordChangeSchema = z.object({ currentPassword: z.string().min(1).max(1024), newPassword: z.string().min(1).max(1024) }).strict();

const nameParam = { name: 'name', in: 'path', required: true, schema: { type: 'string' } };
const body = { required: true, content: { 'application/json': { schema: { type: 'object', required: ['currentPassword', 'newPassword'], properties: { currentPassword: { type: 'string' }, newPassword: { type: 'string' } } } } } };

export const usersModule: RouteModule = {
  name: 'users',
  register(router, ctx) {
    const requireAdmin = (req: Parameters<typeof authUser>[0]) => {
      const user = authUser(req);
      if (!user?.admin) throw new DispatcherError('forbidden', `only an admin (root on the control socket, or an account with role admin) may manage other accounts`);
      return user;
    };
    router.put('/v1/users/me/password', async (req, res) => {
      const user = authUser(req);
      if (user?.via !== 'basic') throw new DispatcherError('forbidden', 'only an account can change its own password (root on the socket: dispatcherd user passwd NAME)');
      const { currentPassword, newPassword } = validate(PasswordChangeSchema, req.body);
      const record = (await readUsersFile(ctx.config.usersFile)).users[user.name];
      if (!(await verifyPassword(currentPassword, record?.hash))) {
        throw new DispatcherError('forbidden', 'currentPassword is not the password of this account', { problems: [{ path: 'currentPassword', message: 'does not match' }] });
      }
      await changePassword(ctx.config.usersFile, user.name, newPassword);
      ctx.audit(req, 'change own password', 'success', { account: user.name });
      res.status(204).end();
    });
    router.get('/v1/users', async (req, res) => {
      requireAdmin(req);
      res.json({ users: await listUsers(ctx.config.usersFile) });
    });
    router.delete('/v1/users/:name', async (req, res) => {
      requireAdmin(req);
      const name = String(req.params.name);
      const problems = userNameProblems(name).filter((p) => !p.message.includes("'cluster-'"));
      if (problems.length) throw new DispatcherError('validation_failed', 'not a user name', { problems });
      await removeUser(ctx.config.usersFile, name);
      ctx.audit(req, 'remove account', 'success', { account: name });
      res.status(204).end();
    });
  },
  openapi: {
    '/v1/users/me/password': {
      put: {
        operationId: 'changeOwnPassword',
        summary: "Change the calling account's password (>= 12 characters, no ':')",
        requestBody: body,
        responses: { '204': { description: 'changed' }, '400': problemResponse('the new password is not acceptable'), ...commonErrors },
      },
    },
    '/v1/users': { get: { operationId: 'listUsers', summary: '(admin) account names and roles, never hashes', responses: { '200': { description: 'accounts', content: { 'application/json': { schema: { type: 'object' } } } }, ...commonErrors } } },
    '/v1/users/{name}': {
      delete: { operationId: 'removeUser', summary: '(admin) remove an account', parameters: [nameParam], responses: { '204': { description: 'removed' }, '404': problemResponse('no such account'), ...commonErrors } },
    },
  },
};
