"""A real SOAP service for weft's end-to-end tests, built with spyne (a SOAP server library).

Serves SOAP 1.1 at /soap11 and SOAP 1.2 at /soap12 on 127.0.0.1:PORT (first argument; 0 picks
one). Prints `listening PORT` once it accepts connections.
"""

import logging
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from spyne import Application, Fault, Integer, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap11, Soap12
from spyne.server.wsgi import WsgiApplication
from spyne.util.wsgi_wrapper import WsgiMounter

TNS = "urn:weft:orders"


class Orders(ServiceBase):
    @rpc(Unicode, Integer, _returns=Unicode)
    def PlaceOrder(ctx, sku, quantity):
        if quantity is None or quantity <= 0:
            raise Fault(faultcode="Client.InvalidQuantity", faultstring="quantity must be positive")
        return "order-%s-%d" % (sku, quantity)


def app(protocol):
    return WsgiApplication(
        Application([Orders], tns=TNS, in_protocol=protocol(validator="lxml"), out_protocol=protocol())
    )


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


# spyne logs every Fault it raises with a traceback; the tests read the answers instead.
logging.disable(logging.CRITICAL)
root = WsgiMounter({"soap11": app(Soap11), "soap12": app(Soap12)})
server = make_server("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0, root, handler_class=Quiet)
print("listening %d" % server.server_port, flush=True)
server.serve_forever()
